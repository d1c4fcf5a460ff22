"""Load and faults, bounded in count and time: thousands of connections, slowloris beside
normal traffic, clients that vanish, a predict that keeps raising, SIGTERM under load."""

import resource
import selectors
import signal
import socket
import struct
import threading
import time

import pytest

from support.servers import module_server, start, stop
from support.waits import wait_until
from support.wire import Client, assert_serves, build, fetch, fetch_metrics, post_json, rss_kib, split_one

pytestmark = pytest.mark.slow   # servers under load, clients that never read

SOURCE = """
    import os
    import sys
    import time

    import openbayes_serving as serv


    class Predictor:
        def predict(self, json):
            if json.get("big"):
                return b"\\x01" * json["big"]
            if json.get("stream"):
                def pieces():
                    for i in range(json["stream"]):
                        time.sleep(0.05)
                        yield b"piece %d\\n" % i
                return serv.Response(pieces())
            if json.get("raise"):
                raise ValueError("failure number %s" % json["raise"])
            if json.get("sleep"):
                print("PREDICT-START", json.get("i"), file=sys.stderr, flush=True)
                time.sleep(json["sleep"])
            if json.get("pad"):
                return {"i": json.get("i"), "pad_length": len(json["pad"])}
            return {"i": json.get("i")}


    if __name__ == "__main__":
        serv.run(Predictor)
"""

CONNECTIONS = 2000


server = module_server("load", SOURCE, "--keep-alive-timeout", "60",
                       "--head-timeout", "60", "--body-timeout", "60")


def open_files_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def baseline_connections(server):
    """Open connections besides the one asking, once the server has settled."""
    return fetch_metrics(server).value("lite_serving_open_connections") - 1


def wait_connections_back_to(server, base, timeout=30):
    wait_until(lambda: baseline_connections(server) == base, timeout=timeout, interval=0.1,
               what=f"open connections back to {base}")


def assert_in_flight_back_to(server, base, after):
    """The server's requests in flight return to ``base``; the failure says ``after`` what."""
    def in_flight():
        return fetch_metrics(server).value("lite_serving_requests_in_flight")

    try:
        wait_until(lambda: in_flight() == base, timeout=5, interval=0.2)
    except AssertionError:
        pass
    assert in_flight() == base, (
        f"requests_in_flight stays at {in_flight()} (baseline {base}) after {after}")


def test_two_thousand_concurrent_connections_all_answered(server):
    if open_files_limit(8192) < 4200:
        pytest.skip("RLIMIT_NOFILE cannot reach 4200")
    base = baseline_connections(server)
    sel = selectors.DefaultSelector()
    socks = []
    state = {}
    try:
        for i in range(CONNECTIONS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((server.host, server.port))
            socks.append(s)
            state[s] = [i, post_json(b'{"i": %d}' % i), b"", None]
            sel.register(s, selectors.EVENT_WRITE)
        deadline = time.monotonic() + 90
        done = 0
        # phase 1: every connection established and its request sent
        pending = CONNECTIONS
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                s = key.fileobj
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert err == 0, f"connect failed: {err}"
                st = state[s]
                try:
                    n = s.send(st[1])
                except BlockingIOError:
                    continue
                st[1] = st[1][n:]
                if not st[1]:
                    sel.unregister(s)
                    pending -= 1
        assert pending == 0, f"{pending} connections never took their request"
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        # phase 2: every answer read; the connections stay open (keep-alive)
        while done < CONNECTIONS and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                s = key.fileobj
                st = state[s]
                chunk = s.recv(65536)
                assert chunk, f"connection {st[0]} closed before its answer"
                st[2] += chunk
                reply, rest = split_one(st[2])
                if reply is not None:
                    assert rest == b""
                    st[3] = reply
                    sel.unregister(s)
                    done += 1
        answered = [st for st in state.values() if st[3] is not None]
        assert len(answered) == CONNECTIONS, f"only {len(answered)} of {CONNECTIONS} answered"
        for i, _, _, reply in answered:
            assert reply.status == 200 and reply.body == b'{"i":%d}' % i, reply
        # all of them are open at once on the server
        assert baseline_connections(server) == base + CONNECTIONS
    finally:
        sel.close()
        for s in socks:
            s.close()
    wait_connections_back_to(server, base)
    assert_serves(server)


def test_slowloris_beside_normal_traffic(server):
    base = baseline_connections(server)
    slow = []
    stop = threading.Event()
    try:
        for _ in range(300):
            s = socket.create_connection((server.host, server.port), timeout=10)
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(s)

        rounds = [0]

        def dribble():
            while not stop.wait(0.2):
                for s in slow:
                    try:
                        s.send(b"s")
                    except OSError:
                        pass
                rounds[0] += 1

        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        attempts = successes = 0
        deadline = time.monotonic() + 30
        # normal traffic for as long as it takes the slow clients to dribble 5 bytes each
        while (rounds[0] < 5 or attempts < 150) and time.monotonic() < deadline \
                and attempts < 20000:
            reply = fetch(server, post_json(b'{"i": %d}' % attempts))
            if reply.status == 200 and reply.body == b'{"i":%d}' % attempts:
                successes += 1
            attempts += 1
        assert rounds[0] >= 5, "the slow clients did not get to dribble"
        assert successes == attempts
        # the slow clients are all still connected (head timeout 60 s)
        assert baseline_connections(server) == base + 300
    finally:
        stop.set()
        for s in slow:
            s.close()
    wait_connections_back_to(server, base)


def test_clients_that_vanish_mid_body_or_before_a_large_answer(server):
    base = baseline_connections(server)
    for i in range(40):     # half a body, then gone (FIN or RST)
        s = socket.create_connection((server.host, server.port), timeout=10)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b" " * 3000)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    for i in range(8):      # ask for 20 MB, read a little, leave
        s = socket.create_connection((server.host, server.port), timeout=10)
        s.sendall(post_json(b'{"big": 20000000}'))
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 "), got[:100]
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    for _ in range(4):      # ask for 20 MB, leave before anything arrives
        s = socket.create_connection((server.host, server.port), timeout=10)
        s.sendall(post_json(b'{"big": 20000000}'))
        s.close()
    assert_serves(server)
    wait_connections_back_to(server, base)
    after = fetch_metrics(server)
    assert after.value("lite_serving_requests_in_flight") == 1   # the /metrics request itself
    # a full large answer still arrives intact
    with Client(server, timeout=30) as c:
        reply = c.request(post_json(b'{"big": 20000000}'))
    assert reply.status == 200 and len(reply.body) == 20000000


def test_predict_raising_a_thousand_times_does_not_grow_memory(server):
    errors_before = fetch_metrics(server).value("lite_serving_predict_errors_total")
    pid = server.proc.pid
    marks = {}
    with Client(server) as c:
        for i in range(1, 1001):
            reply = c.request(post_json(b'{"raise": %d}' % i))
            assert reply.status == 500, reply
            assert b"failure number %d" % i in reply.body
            if i in (200, 1000):
                marks[i] = rss_kib(pid)
    growth = marks[1000] - marks[200]
    assert growth < 10 * 1024, f"RSS grew by {growth} KiB between request 200 and 1000"
    assert fetch_metrics(server).value("lite_serving_predict_errors_total") - errors_before == 1000
    assert_serves(server)


def test_sigterm_under_load_answers_every_request_in_flight(tmp_path):
    srv = start(tmp_path / "drain", SOURCE, "--threads", "2")
    try:
        clients = [Client(srv, timeout=30) for _ in range(12)]
        for i, c in enumerate(clients):
            c.send(post_json(b'{"sleep": 0.2, "i": %d}' % i))
        # every connection accepted (the gauge counts this /metrics one too) before SIGTERM
        wait_until(lambda: fetch_metrics(srv).value("lite_serving_open_connections") == 13,
                   what="12 connections accepted")
        srv.proc.send_signal(signal.SIGTERM)
        for i, c in enumerate(clients):
            reply = c.read()
            assert reply.status == 200 and reply.body == b'{"i":%d}' % i, reply
            raw, how = c.read_to_close(timeout=30)
            assert (raw, how) == (b"", "eof"), (raw, how)
            c.close()
        assert srv.proc.wait(60) == 0, srv.log
        assert srv.log.count("PREDICT-START") == 12
    finally:
        stop(srv)


def test_pipelining_client_that_never_reads_does_not_grow_server_memory(server):
    """20 MB of pipelined ``GET /`` from a client that reads nothing: the server must stop
    reading (back-pressure) instead of buffering every answer (~5x the request bytes)."""
    base = baseline_connections(server)
    pid = server.proc.pid
    before = rss_kib(pid)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.connect((server.host, server.port))
    s.settimeout(3)
    flood = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    sent = 0
    blocked = False
    try:
        while sent < 20_000_000:
            try:
                s.sendall(flood)
            except socket.timeout:
                blocked = True
                break
            sent += len(flood)
        peak = rss_kib(pid)
        growth = peak - before
        assert growth < 64 * 1024, (f"server RSS grew by {growth // 1024} MiB while a client "
                                    f"pipelined {sent // 1024} KiB without reading "
                                    f"(back-pressure: {blocked})")
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    wait_connections_back_to(server, base)
    assert_serves(server)


def test_large_pipelined_body_behind_a_slow_predict_is_read_after_it(server):
    """More than the server buffers behind a pending answer: reading pauses, then resumes."""
    pad = b"p" * 6_000_000
    second = post_json(b'{"i": 2, "pad": "' + pad + b'"}')
    with Client(server, timeout=30) as c:
        sender = threading.Thread(
            target=lambda: c.sock.sendall(post_json(b'{"sleep": 0.5, "i": 1}') + second),
            daemon=True)
        sender.start()
        first = c.read()
        assert first.status == 200 and first.body == b'{"i":1}', first
        after = c.read()
        assert after.status == 200 and after.body == b'{"i":2,"pad_length":6000000}', after
        sender.join(30)
    assert_serves(server)


def test_client_leaving_during_a_streamed_answer_with_requests_behind_it(server):
    """A streamed answer, two pipelined requests behind it, the client leaves mid-stream:
    connections and requests-in-flight return to their baselines."""
    before = fetch_metrics(server)
    base_conns = before.value("lite_serving_open_connections") - 1
    base_flight = before.value("lite_serving_requests_in_flight")
    for _ in range(3):
        s = socket.create_connection((server.host, server.port), timeout=10)
        s.sendall(post_json(b'{"stream": 100}') + build("GET", "/") + post_json(b'{"i": 7}'))
        got = s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200 "), got[:100]
        s.close()
    wait_connections_back_to(server, base_conns)
    assert_in_flight_back_to(server, base_flight, "3 clients left during a streamed answer with "
                                                  "2 requests pipelined behind it")


def test_client_gone_before_the_answers_ahead_of_a_stream_are_written(server):
    """The answers before a streamed one fail to send (the client has left): the requests
    pipelined behind the stream are no longer in flight either."""
    base_flight = fetch_metrics(server).value("lite_serving_requests_in_flight")
    base_conns = baseline_connections(server)
    for i in range(5):
        tag = 9000 + i
        s = socket.create_connection((server.host, server.port), timeout=10)
        s.sendall(post_json(b'{"sleep": 0.3, "i": %d}' % tag))
        server.wait_for(rf"PREDICT-START {tag}\b")
        # behind the pending answer: an immediate answer, a stream, one more request
        s.sendall(build("GET", "/") + post_json(b'{"stream": 3}') + build("GET", "/"))
        s.close()   # nothing was read yet, so this is a FIN; the answers hit a closed peer
    wait_connections_back_to(server, base_conns)
    assert_in_flight_back_to(server, base_flight, "5 clients left before the answers ahead of a "
                                                  "streamed one could be written")


@pytest.mark.parametrize("rest", [b"GET / HTTP/1.1\r\nHost: x\r\n",
                                  b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                  b"\r\nContent-Length: 50\r\n\r\n{\"i\":"], ids=["partial-head", "partial-body"])
def test_half_closed_client_with_an_incomplete_request_behind_a_pending_answer(server, rest):
    """After its answer, the rest can never be completed (the client sent FIN): the server
    ends the connection then, as it does when no answer is pending, not after the head or
    body timeout (60 s here)."""
    with Client(server) as c:
        c.send(post_json(b'{"sleep": 0.3, "i": 5}') + rest)
        c.sock.shutdown(socket.SHUT_WR)
        reply = c.read()
        assert reply.status == 200 and reply.body == b'{"i":5}', reply
        raw, how = c.read_to_close(timeout=8)
    assert how in ("eof", "reset"), (
        f"connection still open 8 s after the answer although the client half-closed "
        f"and its next request is incomplete ({how}; got {raw[:200]!r})")
    # the same without a pending answer: closed at once
    with Client(server) as c:
        c.send(rest)
        c.sock.shutdown(socket.SHUT_WR)
        raw, how = c.read_to_close(timeout=8)
    assert how in ("eof", "reset"), (how, raw[:200])
