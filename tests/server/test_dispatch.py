"""Where predict runs: auto (inline with a watchdog), threads, inline — on real sockets."""

import json
import threading

import pytest

from support.http_client import Connection
from support.wire import wait_in_flight

SLOW_ON_FILE = """
    import os, time

    class Predictor:
        def predict(self, json):
            if json.get("wait_for"):
                deadline = time.monotonic() + 30
                while not os.path.exists(json["wait_for"]) and time.monotonic() < deadline:
                    time.sleep(0.01)
            if json.get("sleep"):
                time.sleep(json["sleep"])
            return {"done": json.get("tag")}
"""


def post(server, obj):
    body = json.dumps(obj).encode()
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return conn.read_response()


@pytest.mark.parametrize("flags", [(), ("--dispatch", "threads")])
def test_fast_predict_answered_while_a_slow_one_holds_a_thread(serve, tmp_path, flags):
    server = serve(SLOW_ON_FILE, *flags)
    release = tmp_path / "release"
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=post(server, {"wait_for": str(release),
                                                                    "tag": "slow"})))
    t.start()
    try:
        wait_in_flight(server, 1)  # the slow request arrives first
        fast = post(server, {"tag": "fast"})
        assert fast.status == 200 and json.loads(fast.body) == {"done": "fast"}
        assert "r" not in slow, "the slow predict was answered before it was released"
    finally:
        release.write_text("go")
        t.join(30)
    assert slow["r"].status == 200 and json.loads(slow["r"].body) == {"done": "slow"}


def test_repeatedly_slow_predict_moves_to_the_thread_pool(serve):
    server = serve(SLOW_ON_FILE)
    assert "threads from now on" not in server.log
    for i in range(5):
        assert post(server, {"sleep": 0.1, "tag": i}).status == 200
    server.wait_for(r"predict took over 20 ms 5 times in 60 s: it runs on up to 10 threads")
    assert post(server, {"tag": "after"}).status == 200


def test_inline_dispatch_answers_in_order(serve):
    server = serve(SLOW_ON_FILE, "--dispatch", "inline")
    assert "predict runs on the I/O thread" in server.log
    for i in range(3):
        resp = post(server, {"tag": i})
        assert json.loads(resp.body) == {"done": i}


def test_dispatch_flag_rejects_unknown_values(serve):
    server = serve(SLOW_ON_FILE, "--dispatch", "sideways", wait=False)
    assert server.proc.wait(20) != 0
    server.stop()
    assert "--dispatch must be auto, threads or inline" in server.log
    assert "Traceback" not in server.log


BAD_EXITS = """
    import sys

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text for you")

    class Predictor:
        def predict(self, json):
            kind = json.get("kind")
            if kind == "exit":
                sys.exit(3)
            if kind == "unprintable":
                raise Unprintable()
            if kind == "bad-status":
                import lite_serving
                return lite_serving.Response(b"x", status=-700)
            return {"ok": True}
"""


@pytest.mark.parametrize("flags", [(), ("--dispatch", "threads", "--threads", "2"),
                                   ("--dispatch", "inline")])
def test_nothing_escaping_predict_stops_the_server(serve, flags):
    """SystemExit, an exception whose str() fails, an impossible status: each is a 500, and the
    server (every pool thread included) goes on answering."""
    server = serve(BAD_EXITS, *flags)
    for _ in range(3):  # more failures than pool threads
        for kind in ("exit", "unprintable", "bad-status"):
            resp = post(server, {"kind": kind})
            assert resp.status == 500, (kind, resp)
            assert "error" in json.loads(resp.body)
    for _ in range(4):
        resp = post(server, {"kind": "fine"})
        assert resp.status == 200 and json.loads(resp.body) == {"ok": True}
    assert "Unprintable" in server.log and "SystemExit" in server.log
