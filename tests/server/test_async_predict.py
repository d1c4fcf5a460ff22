"""``async def predict``, ``async def predict_batch``, ``async def setup`` and async generators as
streamed bodies: coroutines on one asyncio event loop in a thread of its own."""

import json
import signal
import socket
import threading

import msgpack
import pytest

from support.events import PRODUCTION, Collector
from support.http_client import Connection, build_request, post, post_json, request
from support.servers import kill, module_server, serve_to_exit, start, wait_for_new
from support.waits import wait_until

CONCURRENT = 200

OVERLAP = """
    import asyncio

    import openbayes_serving as serv


    class Predictor:
        async def setup(self):
            self.inside = 0
            self.most = 0
            self.all_in = asyncio.Event()   # made on the loop predict runs on

        async def predict(self, json):
            self.inside += 1
            self.most = max(self.most, self.inside)
            if self.inside == json["expect"]:
                self.all_in.set()
            try:   # every request waits until all of them are inside predict at once
                await asyncio.wait_for(self.all_in.wait(), 60)
                await asyncio.sleep(0.5)
            finally:
                self.inside -= 1
            return {"most": self.most, "n": json["n"]}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_200_requests_are_inside_one_async_predict_at_once_with_one_thread(serve):
    server = serve(OVERLAP, "--threads", "1")
    assert "async predict gets: json" in server.log
    assert "async predict runs as tasks on one asyncio event loop" in server.log
    conns = [Connection(server.host, server.port, timeout=90) for _ in range(CONCURRENT)]
    try:
        for n, conn in enumerate(conns):
            body = json.dumps({"expect": CONCURRENT, "n": n}).encode()
            conn.request("POST", "/", {"Content-Type": "application/json"}, body)
        answers = [conn.read_response() for conn in conns]
    finally:
        for conn in conns:
            conn.close()
    assert [a.status for a in answers] == [200] * CONCURRENT, answers[0]
    # all 200 were waiting inside predict together: none was answered before the last arrived
    assert [a.json() for a in answers] == [{"most": CONCURRENT, "n": n} for n in range(CONCURRENT)]


KINDS = """
    import asyncio
    import base64
    import sys

    import openbayes_serving as serv

    PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


    class Predictor:
        async def predict(self, json, params, headers):
            await asyncio.sleep(0)
            kind = params.get("kind")
            if kind == "text":
                return "hello " + headers.get("x-name", "?")
            if kind == "png":
                return PNG
            if kind == "error":
                raise serv.ServingError("not today", status_code=409, payload={"why": "async"})
            if kind == "crash":
                raise RuntimeError("async boom")
            if kind == "bad":
                return object()
            if kind == "stream":
                async def pieces():
                    try:
                        for i in range(json["count"]):
                            await asyncio.sleep(0)
                            yield "piece %d;" % i
                        if json.get("hang"):
                            sys.stderr.write("STREAM-HANGS\\n")
                            await asyncio.sleep(3600)
                    finally:
                        sys.stderr.write("STREAM-CLOSED\\n")
                return serv.Response(pieces(), content_type="text/plain")
            if kind == "events":
                async def events():
                    for i in range(json["count"]):
                        yield {"event": "n", "data": {"i": i}}
                return serv.event_stream(events())
            return {"echo": json, "kind": kind}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


kinds = module_server("async-kinds", KINDS)


def test_async_predict_gets_its_arguments_and_answers_json_and_msgpack(kinds):
    answer = post_json(kinds, {"a": [1, 2]}, target="/?kind=plain")
    assert answer.status == 200 and answer.json() == {"echo": {"a": [1, 2]}, "kind": "plain"}
    packed = post(kinds, msgpack.packb({"b": b"\x00"}), "application/msgpack",
                  headers={"Accept": "application/msgpack"})
    assert packed.status == 200 and packed.media_type() == "application/msgpack"
    assert packed.msgpack() == {"echo": {"b": b"\x00"}, "kind": None}


def test_async_predict_return_kinds(kinds):
    text = post_json(kinds, {}, target="/?kind=text", headers={"X-Name": "Ada"})
    assert (text.status, text.media_type(), text.body) == (200, "text/plain", b"hello Ada")
    png = post_json(kinds, {}, target="/?kind=png")
    assert png.status == 200 and png.media_type() == "image/png" and png.body.startswith(b"\x89PNG")


def test_async_predict_errors_are_answered_and_the_server_goes_on(kinds):
    error = post_json(kinds, {}, target="/?kind=error")
    assert error.status == 409 and error.json() == {"why": "async", "error": "not today"}
    mark = len(kinds.lines)
    crash = post_json(kinds, {}, target="/?kind=crash")
    assert crash.status == 500 and "async boom" in crash.json()["error"]
    wait_for_new(kinds, mark, r"RuntimeError: async boom")
    bad = post_json(kinds, {}, target="/?kind=bad")
    assert bad.status == 500 and bad.json() == {"error": "predict returned a value that cannot be sent"}
    undecodable = post(kinds, b"{not json", "application/json")
    assert undecodable.status == 400
    assert post_json(kinds, {"ok": 1}).status == 200


def test_an_async_generator_is_streamed_chunk_by_chunk(kinds):
    answer = post_json(kinds, {"count": 3}, target="/?kind=stream")
    assert answer.status == 200
    assert answer.header("transfer-encoding") == "chunked"
    assert answer.body == b"piece 0;piece 1;piece 2;"
    events = post_json(kinds, {"count": 2}, target="/?kind=events")
    assert events.media_type() == "text/event-stream"
    assert events.body == b'event: n\ndata: {"i":0}\n\nevent: n\ndata: {"i":1}\n\n'


def test_a_client_leaving_an_async_stream_closes_its_generator(kinds):
    mark = len(kinds.lines)
    with Connection(kinds.host, kinds.port) as conn:
        conn.request("POST", "/?kind=stream", {"Content-Type": "application/json"},
                     b'{"count": 1, "hang": true}')
        wait_for_new(kinds, mark, "STREAM-HANGS")
    wait_for_new(kinds, mark, "STREAM-CLOSED")
    assert post_json(kinds, {"after": 1}).status == 200


EVENTS = """
    import asyncio

    import openbayes_serving as serv


    class Predictor:
        async def predict(self, json):
            serv.emit_event("before", json["tag"])
            await asyncio.sleep(0.05)   # other requests' tasks run meanwhile
            serv.emit_event("after", json["tag"])
            return {"tag": json["tag"]}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_events_of_concurrent_async_predicts_carry_their_own_request_id(tmp_path):
    try:
        collector = Collector()
    except OSError:
        pytest.skip("127.0.0.1:6666 is busy")
    threading.Thread(target=collector.serve_forever, args=(0.05,), daemon=True).start()
    server = start(tmp_path / "events", EVENTS, env=PRODUCTION)
    try:
        ids = list(range(700, 710))
        conns = [Connection(server.host, server.port) for _ in ids]
        for request_id, conn in zip(ids, conns):
            conn.request("POST", "/", {"Content-Type": "application/json",
                                       "X-Openbayes-Serving-Request-Id": str(request_id)},
                         json.dumps({"tag": request_id}).encode())
        for conn in conns:
            assert conn.read_response().status == 200
            conn.close()
        collector.wait_for(2 * len(ids))
        events = collector.events()
        assert sorted((e["id"], e["name"], e["data"]) for e in events) == sorted(
            (i, name, str(i).encode()) for i in ids for name in ("before", "after"))
    finally:
        kill(server)
        collector.shutdown()
        collector.server_close()


DRAINS = """
    import asyncio
    import os
    import sys

    import openbayes_serving as serv


    class Predictor:
        async def predict(self, json):
            sys.stderr.write("PREDICT-START\\n")
            while not os.path.exists(json["gate"]):
                await asyncio.sleep(0.01)
            return {"done": True}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_shutdown_waits_for_async_predicts_in_flight(serve, tmp_path):
    server = serve(DRAINS)
    gate = tmp_path / "gate"
    with Connection(server.host, server.port, timeout=30) as conn:
        conn.request("POST", "/", {"Content-Type": "application/json"},
                     json.dumps({"gate": str(gate)}).encode())
        server.wait_for("PREDICT-START")
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("shutting down")
        gate.write_text("open")
        answer = conn.read_response()
    assert answer.status == 200 and answer.json() == {"done": True}
    assert server.stop() == 0


BATCH = """
    import asyncio

    import openbayes_serving as serv


    class Predictor:
        async def setup(self):
            self.loop = asyncio.get_running_loop()

        async def predict_batch(self, json):
            assert asyncio.get_running_loop() is self.loop
            await asyncio.sleep(0)
            return [{"double": item["x"] * 2, "batch": len(json)} for item in json]


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_async_predict_batch_runs_on_the_loop_of_setup(serve):
    server = serve(BATCH)
    assert "async predict_batch gets" in server.log
    answer = post_json(server, {"x": 21})
    assert answer.status == 200 and answer.json() == {"double": 42, "batch": 1}


ASYNC_GENERATOR = """
    import openbayes_serving as serv


    class Predictor:
        async def predict(self, json):
            yield "a"


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_an_async_generator_predict_stops_start_up_saying_what_to_do(tmp_path):
    code, output = serve_to_exit(tmp_path / "agen", ASYNC_GENERATOR)
    assert code == 1
    assert "predict is an async generator" in output and "event_stream" in output


SYNC_SETUP = """
    import openbayes_serving as serv


    class Predictor:
        def setup(self):
            raise RuntimeError("a plain setup is the predictor's own business")

        def predict(self, json):
            import sys
            return {"asyncio": "asyncio" in sys.modules}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_a_plain_predictor_neither_runs_setup_nor_imports_asyncio(serve):
    server = serve(SYNC_SETUP)
    assert post_json(server, {}).json() == {"asyncio": False}
    assert "asyncio event loop" not in server.log


def test_v2_and_probes_still_answer_beside_async_predict(kinds):
    assert request(kinds, "GET", "/healthz").status == 200
    with socket.create_connection((kinds.host, kinds.port)) as sock:
        sock.sendall(build_request("GET", "/readyz"))
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_async_predict_is_served_after_listening_early(serve):
    server = serve(EVENTS, "--listen-early")
    assert "async predict runs as tasks" in server.log
    answer = post_json(server, {"tag": 5})
    assert answer.status == 200 and answer.json() == {"tag": 5}


BIG = """
    import asyncio

    import openbayes_serving as serv

    PIECE = b"x" * 65536


    class Predictor:
        def __init__(self):
            self.produced = 0

        async def predict(self, json):
            if json.get("ask"):
                return {"produced": self.produced}

            async def pieces():
                for _ in range(json["total"] // len(PIECE)):
                    self.produced += len(PIECE)
                    yield PIECE
                    await asyncio.sleep(0)
            return serv.Response(pieces(), content_type="application/octet-stream")


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_a_slow_reader_holds_an_async_generator_back(serve):
    server = serve(BIG)
    total = 64 * 1024 * 1024

    def produced():
        return post_json(server, {"ask": True}).json()["produced"]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(60)
    sock.connect((server.host, server.port))
    try:
        body = json.dumps({"total": total}).encode()
        sock.sendall(build_request("POST", "/", {"Content-Type": "application/json"}, body))
        # the generator runs until the socket's buffers and the 1 MiB window are full, then
        # waits: the count stops moving far below the total (asked through other requests,
        # which the same event loop answers meanwhile)
        seen = []

        def holds_still():   # a steady state: no event marks it
            seen.append(produced())
            return len(seen) >= 20 and len(set(seen[-10:])) == 1

        wait_until(holds_still, 60, what="the generator's count to hold still")
        assert 0 < seen[-1] < 16 * 1024 * 1024, seen
        received = 0
        tail = b""
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(1 << 20)
            assert data, received
            received += len(data)
            tail = (tail + data)[-16:]
    finally:
        sock.close()
    assert received > total and produced() == total
