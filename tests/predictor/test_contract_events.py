"""emit_event(name, data, id=None): logged in development, POSTed to the collector in production."""

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest

from support.events import COLLECTOR, PRODUCTION, Collector
from support.http_client import post
from support.servers import kill, module_server, start, wait_for_new

SOURCE = """
    import time

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            for event in json["events"]:
                data = object() if event["data"] == "<object>" else event["data"]
                if "id" in event:
                    serv.emit_event(event["name"], data, id=event["id"])
                else:
                    serv.emit_event(event["name"], data)
                if event.get("sleep"):
                    time.sleep(event["sleep"])
            return {"emitted": len(json["events"])}


    if __name__ == "__main__":
        serv.run(Predictor)
"""

def collector_port_answers():
    """True when something accepts connections on 127.0.0.1:6666."""
    import socket
    try:
        socket.create_connection(COLLECTOR, timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def collector():
    try:
        server = Collector()
    except OSError:
        pytest.skip("127.0.0.1:6666 is busy")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


production = module_server("events-prod", SOURCE,
                           "--port", "0", "--host", "127.0.0.1", env=PRODUCTION)


development = module_server("events-dev", SOURCE)


def emit(server, events, request_id=None):
    headers = [] if request_id is None else [("X-Openbayes-Serving-Request-Id", str(request_id))]
    resp = post(server, msgpack.packb({"events": events}, use_bin_type=True),
                "application/msgpack", headers=headers)
    assert resp.status == 200, resp
    assert resp.json() == {"emitted": len(events)}
    return resp


# -- development ----------------------------------------------------------------

def test_development_logs_events_with_binary_as_placeholder(development):
    mark = len(development.lines)
    emit(development, [
        {"name": "bin-event", "data": b"SECRETBYTES\x00\x01"},
        {"name": "text-event", "data": "visible-text"},
        {"name": "number-event", "data": 4242},
        {"name": "object-event", "data": {"key": ["listed-value"]}},
    ])
    line = wait_for_new(development, mark, r"bin-event")
    assert "SECRETBYTES" not in line
    assert "SECRETBYTES" not in "".join(development.lines[mark:])
    assert "visible-text" in wait_for_new(development, mark, r"text-event")
    assert "4242" in wait_for_new(development, mark, r"number-event")
    assert "listed-value" in wait_for_new(development, mark, r"object-event")


def test_development_posts_nothing(development, collector):
    mark = len(development.lines)
    emit(development, [{"name": "dev-only", "data": "x", "id": 5}], request_id=5)
    wait_for_new(development, mark, r"dev-only")
    assert collector.received == []


def test_emit_event_never_raises(development):
    # data that cannot be encoded: predict still answers 200
    emit(development, [{"name": "unencodable", "data": "<object>"}])


def test_emit_event_never_raises_in_production(production):
    emit(production, [{"name": "unencodable", "data": "<object>", "id": 3}])


# -- production -----------------------------------------------------------------

def test_production_posts_msgpack_events(production, collector):
    emit(production, [
        {"name": "bytes", "data": b"\x00\xff raw"},
        {"name": "text", "data": "héllo 世界"},
        {"name": "int", "data": 42},
        {"name": "negative", "data": -7},
        {"name": "float", "data": 2.5},
        {"name": "object", "data": {"a": [1, "x", None]}},
        {"name": "list", "data": [1, 2]},
    ], request_id=1234)
    received = collector.wait_for(7)
    for method, path, content_type, _ in received:
        assert (method, path) == ("POST", "/events")
        assert content_type.split(";")[0].strip().lower() == "application/msgpack"
    events = collector.events()
    assert [e["name"] for e in events] == ["bytes", "text", "int", "negative", "float", "object",
                                           "list"]
    for event in events:
        assert set(event) == {"id", "name", "data"}
        assert event["id"] == 1234
        assert isinstance(event["data"], bytes), event
    data = {e["name"]: e["data"] for e in events}
    assert data["bytes"] == b"\x00\xff raw"
    assert data["text"] == "héllo 世界".encode("utf-8")
    assert data["int"] == b"42"
    assert data["negative"] == b"-7"
    assert data["float"] == b"2.5"
    assert json.loads(data["object"]) == {"a": [1, "x", None]}
    assert json.loads(data["list"]) == [1, 2]


def test_production_id_argument_wins_over_the_header(production, collector):
    emit(production, [{"name": "explicit", "data": "d", "id": 77}], request_id=5)
    (event,) = [msgpack.unpackb(body, raw=False) for *_, body in collector.wait_for(1)]
    assert event == {"id": 77, "name": "explicit", "data": b"d"}


def test_production_ids_of_concurrent_requests(production, collector):
    ids = list(range(501, 513))

    def one(request_id):
        emit(production, [{"name": f"req-{request_id}-a", "data": "a", "sleep": 0.05},
                          {"name": f"req-{request_id}-b", "data": "b"}], request_id=request_id)

    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(one, ids))
    collector.wait_for(2 * len(ids))
    events = collector.events()
    assert len(events) == 2 * len(ids)
    for event in events:
        m = re.fullmatch(r"req-(\d+)-[ab]", event["name"])
        assert m and event["id"] == int(m.group(1)), event
    assert {e["name"] for e in events} == {f"req-{i}-{s}" for i in ids for s in "ab"}


def test_production_without_an_id_logs_an_error(production, collector):
    mark = len(production.lines)
    emit(production, [{"name": "orphan-event", "data": "d"}])
    wait_for_new(production, mark, r"(?i)(?=.*error)(?=.*orphan-event)")
    assert collector.received == []


def test_production_collector_down_logs_an_error_and_predict_answers(production):
    if collector_port_answers():
        pytest.skip("something listens on 127.0.0.1:6666")
    mark = len(production.lines)
    emit(production, [{"name": "lost-event", "data": "d"}], request_id=9)
    wait_for_new(production, mark, r"(?i)(?=.*error)(?=.*lost-event)")
    emit(production, [{"name": "lost-again", "data": "d", "id": 10}])


STREAMING = """
    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            def pieces():
                for i in range(json["count"]):
                    serv.emit_event("piece", i)
                    yield "piece %d;" % i
            return serv.Response(pieces())


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_production_events_from_a_streamed_generator_keep_the_request_id(tmp_path, collector):
    """The generator runs on a thread of its own: the request's context goes with it."""
    srv = start(tmp_path / "stream", STREAMING, env=PRODUCTION)
    try:
        for request_id in (31, 32):
            resp = post(srv, json.dumps({"count": 3}).encode(), "application/json",
                        headers=[("X-Openbayes-Serving-Request-Id", str(request_id))])
            assert resp.status == 200 and resp.body == b"piece 0;piece 1;piece 2;", resp
        collector.wait_for(6)
        events = collector.events()
        assert sorted((e["id"], e["data"]) for e in events) == [
            (31, b"0"), (31, b"1"), (31, b"2"), (32, b"0"), (32, b"1"), (32, b"2")]
        assert "no request id" not in srv.log
    finally:
        kill(srv)


RAW_EVENT = """
    import openbayes_serving as serv

    class Predictor:
        def predict(self, data):
            serv.emit_event("upload", data)
            return {"size": len(data)}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_a_form_typed_body_reaches_predict_and_its_event_as_the_bytes_sent(tmp_path, collector):
    """``curl --data-binary @dog.png URL`` sends application/x-www-form-urlencoded: predict gets
    the raw body (openbayes-serving's is empty), and so does an event emitted with it."""
    server = start(tmp_path / "m", RAW_EVENT, env=PRODUCTION)
    try:
        image = b"\x89PNG\r\n\x1a\n\x00\xff&=+"
        answer = post(server, image, "application/x-www-form-urlencoded",
                      headers=[("X-Openbayes-Serving-Request-Id", "31")])
        assert answer.status == 200 and answer.json() == {"size": len(image)}
        (event,) = [msgpack.unpackb(body, raw=False) for *_, body in collector.wait_for(1)]
        assert event == {"id": 31, "name": "upload", "data": image}
    finally:
        kill(server)


# -- where predict runs ------------------------------------------------------------

BATCHED = """
    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict_batch(self, json):
            for body in json:
                serv.emit_event("batched-" + body["tag"], "d")
                serv.emit_event("given-" + body["tag"], "d", id=body["id"])
            return [{"tag": body["tag"]} for body in json]


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_events_in_predict_batch_belong_to_no_single_request(tmp_path):
    """predict_batch answers several requests at once: an event without ``id`` belongs to none
    of them (logged as request -), and one with ``id`` to that id."""
    server = start(tmp_path, BATCHED)
    try:
        mark = len(server.lines)
        resp = post(server, json.dumps({"tag": "t1", "id": 41}).encode(), "application/json",
                    headers=[("X-Openbayes-Serving-Request-Id", "5")])
        assert resp.status == 200 and resp.json() == {"tag": "t1"}
        assert "of request - " in wait_for_new(server, mark, r"event batched-t1 ")
        assert "of request 41 " in wait_for_new(server, mark, r"event given-t1 ")
    finally:
        kill(server)


def test_events_in_predict_on_a_pool_thread_carry_their_request_id(tmp_path, collector):
    server = start(tmp_path, SOURCE, "--dispatch", "threads", env=PRODUCTION)
    try:
        emit(server, [{"name": "pooled", "data": "p"}], request_id=321)
        (event,) = [msgpack.unpackb(body, raw=False) for *_, body in collector.wait_for(1)]
        assert event == {"id": 321, "name": "pooled", "data": b"p"}
    finally:
        kill(server)


TO_THREAD = """
    import asyncio

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            # work handed to another thread with a copy of predict's context
            async def main():
                await asyncio.to_thread(serv.emit_event, "threaded-" + json["tag"], "d")
            asyncio.run(main())
            serv.emit_event("direct-" + json["tag"], "d")
            return {"tag": json["tag"]}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_events_from_work_predict_hands_to_another_thread_carry_its_request_id(tmp_path):
    """asyncio.to_thread runs the work in a copy of predict's context: while predict waits for
    it, emit_event there belongs to predict's request; the next request on the same thread has
    its own id, and events outside predict's call belong to none."""
    server = start(tmp_path, TO_THREAD)
    try:
        for tag, rid in (("one", "71"), ("two", "72")):
            mark = len(server.lines)
            resp = post(server, json.dumps({"tag": tag}).encode(), "application/json",
                        headers=[("X-Openbayes-Serving-Request-Id", rid)])
            assert resp.status == 200 and resp.json() == {"tag": tag}
            assert f"of request {rid} " in wait_for_new(server, mark, rf"event threaded-{tag} ")
            assert f"of request {rid} " in wait_for_new(server, mark, rf"event direct-{tag} ")
    finally:
        kill(server)
