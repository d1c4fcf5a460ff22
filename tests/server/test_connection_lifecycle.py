"""The connection's lifecycle under hostile and unlucky clients: keep-alive after slow answers,
streams whose producer dies, failing uploads among pipelined requests, undecodable bodies,
bytes that can never become a request, and no request waiting behind another's predict."""

import json
import os
import signal
import socket
import threading
import time

import pytest

from support.servers import module_server, start, stop
from support.waits import wait_until
from support.wire import (
    Client,
    build,
    post_json,
    read_to_close,
    received_bytes,
    split_one,
    split_responses,
    wait_received,
)

SOURCE = """
    import asyncio
    import os
    import sys
    import time

    import openbayes_serving as serv


    class Stop(BaseException):
        pass


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            tag = json.get("tag")
            os.write(2, b"PREDICT-START %s\\n" % str(tag).encode())  # one write: threads do not mix
            if json.get("gate"):
                while not os.path.exists(json["gate"]):
                    time.sleep(0.01)
            if json.get("sleep"):
                time.sleep(json["sleep"])
            if json.get("stream"):
                def pieces():
                    for i in range(json["stream"]):
                        time.sleep(json.get("every", 0))
                        yield "piece %d;" % i
                    if json["end"] != "none":
                        raise {"cancelled": asyncio.CancelledError, "stop": Stop,
                               "exit": SystemExit}[json["end"]]()
                return serv.Response(pieces())
            return {"tag": tag}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


server = module_server("life", SOURCE,
                       "--keep-alive-timeout", "3", "--head-timeout", "60", "--body-timeout", "60")


def ask(obj, target="/"):
    return post_json(json.dumps(obj).encode(), target)


# -- keep-alive: the idle timer starts when the last answer has been written ------------------

@pytest.mark.slow
@pytest.mark.parametrize("slow", [{"sleep": 4}, {"stream": 8, "every": 0.5, "end": "none"}],
                         ids=["predict", "stream"])
def test_keep_alive_outlives_an_answer_slower_than_its_timeout(server, slow):
    with Client(server) as c:
        reply = c.request(ask({"tag": "slow", **slow}))
        assert reply.status == 200, reply
        # within the 3 s keep-alive timeout counted from the answer, and long enough for the
        # once-a-second deadline check to have run since the answer
        time.sleep(1.5)
        reply = c.request(ask({"tag": "next"}))
        assert reply.status == 200 and reply.body == b'{"tag":"next"}', reply
        # and the idle timer does close the connection once it has run out
        raw, how = c.read_to_close(timeout=15)
    assert raw == b"" and how in ("eof", "reset"), (raw, how)


# -- a stream ends however its producer ends -------------------------------------------------

@pytest.mark.parametrize("end", ["cancelled", "stop", "exit"])
def test_stream_whose_generator_raises_a_base_exception_ends_the_connection(server, end):
    with Client(server) as c:
        c.send(ask({"tag": end, "stream": 2, "end": end}))
        raw, how = c.read_to_close(timeout=20)
    assert how in ("eof", "reset"), f"the connection stayed open after the stream died: {raw!r}"
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"piece 1;" in raw
    assert not raw.endswith(b"0\r\n\r\n")  # an aborted stream does not claim to be complete
    assert Client(server).request(ask({"tag": "after"})).status == 200


def test_sigterm_does_not_wait_for_a_dead_stream(tmp_path):
    srv = start(tmp_path / "s", SOURCE, "--graceful-timeout", "60")
    try:
        with Client(srv) as c:
            c.send(ask({"tag": "x", "stream": 1, "end": "cancelled"}))
            c.read_to_close(timeout=20)
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(20) == 0, srv.log
    finally:
        stop(srv)


# -- errors take their place among pipelined answers -------------------------------------------

SPOOL_LIMITED = SOURCE.replace("import asyncio\n", "import asyncio\n    import resource\n").replace(
    "class Stop(BaseException):",
    "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # uploads cannot be stored\n\n\n"
    "    class Stop(BaseException):")


def test_a_failing_upload_is_answered_after_the_requests_before_it(tmp_path):
    srv = start(tmp_path / "fsize", SPOOL_LIMITED, "--spool-size", "65536")
    try:
        gate = tmp_path / "gate"
        form = (b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n"
                + b"u" * (3 << 20) + b"\r\n--B--\r\n")
        upload = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(form)) + form
        with Client(srv, timeout=30) as c:
            c.send(ask({"tag": "first", "gate": str(gate)}))
            srv.wait_for("PREDICT-START first")
            since = received_bytes(srv)
            # the server reads ahead only so much while the first answer is pending: the rest
            # of the upload waits in the socket, so it is sent from a thread of its own
            sender = threading.Thread(target=_send_quietly, args=(c.sock, upload), daemon=True)
            sender.start()
            wait_received(srv, upload.index(b"\r\n\r\n") + 4, since)   # read ahead: its head
            gate.write_text("")
            raw, how = c.read_to_close(timeout=20)
            sender.join(20)
        replies, rest = split_responses(raw)
        assert [r.status for r in replies] == [200, 507], raw[:400]
        assert replies[0].body == b'{"tag":"first"}'
        assert b"cannot store this upload" in replies[1].body
        srv.wait_for("cannot write an upload to a temporary file")
    finally:
        stop(srv)


def _send_quietly(sock, data):
    try:
        sock.sendall(data)
    except OSError:  # the server refused the upload and closed before taking all of it
        pass


# -- bodies that cannot be decoded are the client's error ----------------------------------------

@pytest.mark.parametrize("body", [b"[" * 100000 + b"]" * 100000, b'{"a":' * 50000 + b"1" + b"}" * 50000,
                                  b"[" * 100000], ids=["deep-array", "deep-object", "unclosed"])
def test_undecodable_json_is_400_and_predict_never_runs(server, body):
    mark = len(server.lines)
    with Client(server) as c:
        reply = c.request(build("POST", "/", [("Content-Type", "application/json")], body))
    assert reply.status == 400, reply
    assert b"not valid JSON" in reply.body
    time.sleep(0.2)   # a window in which no predict may start: nothing to wait for
    assert not any("PREDICT-START" in line for line in server.lines[mark:])


# -- bytes that can never become a request are refused at once ----------------------------------

CLIENT_HELLO = bytes.fromhex(
    "16030100c8010000c40303") + os.urandom(32) + bytes.fromhex("000004130113020100009700000010")


@pytest.fixture(scope="module", params=["compiled", "pure"])
def slow_timeouts(request, tmp_path_factory):
    env = {"LITE_SERVING_PURE": "1"} if request.param == "pure" else None
    srv = start(tmp_path_factory.mktemp(f"bytes-{request.param}"), SOURCE,
                       "--head-timeout", "60", env=env)
    yield srv
    stop(srv)


@pytest.mark.parametrize("data,message", [
    (CLIENT_HELLO, b"a TLS handshake was sent to a plain-HTTP port"),
    (b"GET / HTTP/1.1\nHost: x\n\n", b"bare LF in request head"),
    (b"GET / HTTP/1.1\nHost: x\n", b"bare LF in request head"),
    (b"\x00\x01\x02\x03", b"invalid method"),
], ids=["tls-client-hello", "bare-lf", "bare-lf-partial", "binary"])
def test_bytes_that_cannot_begin_a_request_are_refused_at_once(slow_timeouts, data, message):
    """The head timeout is 60 s: an answer within 20 s is not the timeout's."""
    s = socket.create_connection((slow_timeouts.host, slow_timeouts.port), timeout=20)
    try:
        s.sendall(data)
        raw, how = read_to_close(s, timeout=20)
    finally:
        s.close()
    reply, _rest = split_one(raw)
    assert reply is not None and reply.status == 400, (raw, how)
    assert message in reply.body
    assert how in ("eof", "reset")


# -- no request waits behind another connection's predict ---------------------------------------

@pytest.mark.parametrize("trial", range(3))
def test_a_fast_request_does_not_wait_behind_a_slow_predict(server, tmp_path, trial):
    """Both requests go out together, so that they are often read in the same turn of the loop.
    The slow predict is held until the fast answer has arrived: a fast request that waited
    behind it would never be answered (and the test would time out)."""
    gate = tmp_path / f"gate{trial}"
    busy = socket.create_connection((server.host, server.port), timeout=20)
    slow = socket.create_connection((server.host, server.port), timeout=20)
    fast = socket.create_connection((server.host, server.port), timeout=20)
    try:
        # a short predict (under the 20 ms rescue threshold) holds the loop's thread while
        # both requests arrive, so that its next turn reads them together
        busy.sendall(ask({"tag": f"busy{trial}", "sleep": 0.015}))
        server.wait_for(rf"PREDICT-START busy{trial}\b")
        slow.sendall(ask({"tag": f"slow{trial}", "gate": str(gate)}))
        fast.sendall(ask({"tag": f"fast{trial}"}))
        fast_client = Client.__new__(Client)
        fast_client.sock, fast_client.buf, fast_client.received = fast, b"", 0
        reply = fast_client.read()
        assert reply.body == b'{"tag":"fast%d"}' % trial
        gate.write_text("")
        slow_client = Client.__new__(Client)
        slow_client.sock, slow_client.buf, slow_client.received = slow, b"", 0
        assert slow_client.read().body == b'{"tag":"slow%d"}' % trial
    finally:
        gate.write_text("")
        for s in (busy, slow, fast):
            s.close()


def test_many_slow_predicts_run_at_least_as_concurrently_as_the_reference(server, tmp_path):
    """The reference runs 10 predicts at once: 10 requests held at a gate all start."""
    gate = tmp_path / "gate-many"
    mark = len(server.lines)
    socks = []
    try:
        for i in range(10):
            s = socket.create_connection((server.host, server.port), timeout=30)
            s.sendall(ask({"tag": f"many{i}", "gate": str(gate)}))
            socks.append(s)
        wait_until(lambda: sum("PREDICT-START many" in line for line in server.lines[mark:]) == 10,
                   timeout=20, what="10 predicts running at once")
    finally:
        gate.write_text("")
        for s in socks:
            s.close()
