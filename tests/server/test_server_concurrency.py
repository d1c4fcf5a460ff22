"""A slow predict must not freeze the server; inline mode (--threads 0) still answers."""

import select

from support.http_client import Connection, build_request, post_json, request
from support.servers import kill, module_server, start, wait_for_new

SOURCE = """
    import sys
    import time

    import openbayes_serving as serv


    class Predictor:
        def predict(self, json):
            if json.get("sleep"):
                print("SLOW-START", file=sys.stderr, flush=True)
                time.sleep(json["sleep"])
            return {"echo": json}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def pending(conn):
    """True while nothing at all has arrived on ``conn``."""
    if conn.buf:
        return False
    readable, _, _ = select.select([conn.sock], [], [], 0)
    return not readable


def slow_request():
    return build_request("POST", "/", [("Content-Type", "application/json")], b'{"sleep": 3}')


server = module_server("slow", SOURCE)


def test_slow_predict_does_not_freeze_the_server(server):
    mark = len(server.lines)
    with Connection(server.host, server.port, timeout=20) as slow:
        slow.send(slow_request())
        wait_for_new(server, mark, r"SLOW-START")  # the slow predict is running now
        # A new connection is accepted and GET / is answered while it runs ...
        with Connection(server.host, server.port) as other:
            other.send(build_request("GET", "/"))
            resp = other.read_response()
            assert resp.status == 200 and "message" in resp.json()
            assert pending(slow), "GET / was only answered after the slow predict finished"
        # ... and so is another (fast) predict on yet another connection.
        fast = post_json(server, {"fast": True})
        assert fast.status == 200 and fast.json() == {"echo": {"fast": True}}
        assert pending(slow), "a fast predict waited for the slow one"
        # the slow one completes normally
        resp = slow.read_response()
        assert resp.status == 200 and resp.json() == {"echo": {"sleep": 3}}


def test_inline_mode_echo(tmp_path):
    srv = start(tmp_path / "inline", SOURCE, "--threads", "0")
    try:
        assert post_json(srv, {"a": [1, "b"]}).json() == {"echo": {"a": [1, "b"]}}
        with Connection(srv.host, srv.port) as conn:
            conn.send(build_request("POST", "/", [("Content-Type", "application/json")], b'{"n": 1}')
                      + build_request("GET", "/")
                      + build_request("POST", "/", [("Content-Type", "application/json")],
                                      b'{"n": 2}'))
            first, second, third = conn.read_responses(3)
        assert first.json() == {"echo": {"n": 1}}
        assert second.status == 200 and "message" in second.json()
        assert third.json() == {"echo": {"n": 2}}
        assert request(srv, "GET", "/").status == 200
    finally:
        kill(srv)
