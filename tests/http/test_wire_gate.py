"""What a predictor returns never forges the wire: statuses, header names and values are
checked where the answer head is built, whatever path built them; answers that carry no body
(204, 304, HEAD) carry none, whatever the predictor returned."""

import pytest

from support.servers import module_server, wait_for_new
from support.wire import Client, build, post_json, split_one

SOURCE = """
    import openbayes_serving as serv
    from openbayes_serving.common import ServingError


    class Predictor:
        def predict(self, json):
            case = json["case"]
            if case == "headers":
                return serv.Response(b"hi", headers=json["headers"])
            if case == "pairs":
                return serv.Response(b"hi", headers=[tuple(p) for p in json["headers"]])
            if case == "mimetype":
                return serv.Response(b"hi", mimetype=json["value"])
            if case == "content_type":
                return serv.Response(b"hi", content_type=json["value"])
            if case == "status":
                return serv.Response(json.get("body", "x"), status=json["status"])
            if case == "error":
                raise ServingError("refused", status_code=json["status"])
            if case == "stream_status":
                return serv.Response(iter([b"a", b"b"]), status=json["status"])
            if case == "flask":
                import flask
                response = flask.Response(b"hi")
                response.headers.add(json["name"], json["value"])
                return response
            return {"echo": json}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


server = module_server("gate", SOURCE)


def ask(obj):
    import json
    return post_json(json.dumps(obj).encode())


def answers_then_next(server, obj):
    """Send ``obj`` and a pipelined echo on one connection: (first answer, second answer)."""
    with Client(server) as c:
        c.send(ask(obj) + ask({"case": "echo", "n": 2}))
        first = c.read()
        second = c.read()
    return first, second


INJECTIONS = [
    {"case": "headers", "headers": {"X-Ok": "a\r\nSet-Cookie: x=1"}},
    {"case": "headers", "headers": {"X-Ok": "a\nSet-Cookie: x=1"}},
    {"case": "headers", "headers": {"X-Ok": "a\rb"}},
    {"case": "headers", "headers": {"X-Ok": "a\x00b"}},
    {"case": "headers", "headers": {"X-Ok": "a\x01b"}},
    {"case": "headers", "headers": {"X-Ok": "a\x7fb"}},
    {"case": "headers", "headers": {"Content-Type": "text/html\r\nSet-Cookie: x=1"}},
    {"case": "headers", "headers": {"Content-Length ": "2"}},
    {"case": "headers", "headers": {"X Bad": "1"}},
    {"case": "headers", "headers": {"X-Bad:": "1"}},
    {"case": "headers", "headers": {"": "1"}},
    {"case": "headers", "headers": {"X-Ünicode": "1"}},
    {"case": "pairs", "headers": [["X-A\r\nInjected", "1"]]},
    {"case": "mimetype", "value": "text/html\r\nSet-Cookie: x=1"},
    {"case": "content_type", "value": "text/html\r\nSet-Cookie: x=1"},
    {"case": "content_type", "value": "text/html\x00"},
    {"case": "content_type", "value": "text/\u2603"},
]


@pytest.mark.parametrize("obj", INJECTIONS, ids=[repr(o)[:60] for o in INJECTIONS])
def test_invalid_response_headers_answer_500_and_forge_nothing(server, obj):
    mark = len(server.lines)
    first, second = answers_then_next(server, obj)
    assert first.status == 500, first
    assert b"cannot be sent" in first.body
    assert not first.header("set-cookie") and not first.header("injected")
    # the pipelined request behind it gets its own, genuine answer
    assert second.status == 200 and second.body == b'{"echo":{"case":"echo","n":2}}', second
    wait_for_new(server, mark, r"answer to POST / not sent: ")


def test_flask_response_with_an_injected_header_is_refused(server):
    first, second = answers_then_next(server, {"case": "flask", "name": "X-A",
                                               "value": "1\r\nSet-Cookie: x=1"})
    assert first.status == 500 and not first.header("set-cookie"), first
    assert second.status == 200


VALID = [
    ({"case": "headers", "headers": {"X-Ok": "plain value, with; marks=1 \tand tab"}},
     "x-ok", "plain value, with; marks=1 \tand tab"),
    ({"case": "headers", "headers": {"X-Latin": "caf\u00e9"}}, "x-latin", "caf\u00e9"),
    ({"case": "mimetype", "value": "text/csv"}, "content-type", "text/csv; charset=utf-8"),
    ({"case": "content_type", "value": "application/x-thing; v=2"}, "content-type",
     "application/x-thing; v=2"),
]


@pytest.mark.parametrize("obj,name,value", VALID, ids=[repr(v[0])[:50] for v in VALID])
def test_valid_response_headers_are_sent(server, obj, name, value):
    first, second = answers_then_next(server, obj)
    assert first.status == 200 and first.body == b"hi", first
    raw = first.header(name)
    assert raw.encode("latin-1").decode("latin-1") == value
    assert second.status == 200


def test_framing_headers_of_a_predictor_are_left_out(server):
    first, _ = answers_then_next(server, {"case": "headers", "headers": {
        "Content-Length": "99", "transfer-encoding": "chunked", "Connection": "close", "X-Kept": "1"}})
    assert first.status == 200 and first.body == b"hi"
    assert [v for n, v in first.headers if n.lower() == "content-length"] == ["2"]
    assert not first.header("transfer-encoding") and first.header("connection") is None
    assert first.header("x-kept") == "1"


@pytest.mark.parametrize("case", ["status", "error", "stream_status"])
@pytest.mark.parametrize("status", [100, 101, 103, 199, 600, 999, 42])
def test_statuses_outside_200_to_599_answer_500(server, case, status):
    mark = len(server.lines)
    first, second = answers_then_next(server, {"case": case, "status": status})
    assert first.status == 500, first
    assert second.status == 200, second
    wait_for_new(server, mark, rf"(not sent|could not be sent as given).*\b{status}\b|"
                               rf"\b{status}\b.*(not sent|could not be sent as given)")


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("case", ["status", "error", "stream_status"])
def test_204_and_304_carry_no_body(server, status, case):
    """A body after a 204 would be read by a pipelining client as the next answer."""
    obj = {"case": case, "status": status, "body": "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"}
    with Client(server) as c:
        c.send(ask(obj) + ask({"case": "echo", "n": 3}))
        raw = b""
        while raw.count(b"HTTP/1.1 ") < 2 or not raw.endswith(b'{"echo":{"case":"echo","n":3}}'):
            chunk = c.sock.recv(65536)
            assert chunk, raw
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), raw
    if status == 204:
        assert b"content-length" not in head.lower()
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), raw
    assert b"forged" not in raw


@pytest.mark.parametrize("target", ["/", "/healthz", "/readyz", "/metrics", "/v2/health/live"])
def test_head_answers_carry_no_body(server, target):
    with Client(server) as c:
        c.send(build("HEAD", target) + build("GET", "/healthz"))
        first = c.read(head_only=True)
        second = c.read()
    assert first.status in (200, 404) and first.body == b""
    assert int(first.header("content-length", "0")) >= 0
    assert second.status == 200 and second.body == b'{"status":"alive"}', second


def test_a_complete_head_read_alone_frames_correctly(server):
    """split_one with head_only reads exactly the head: the HEAD answer had nothing after it."""
    with Client(server) as c:
        c.send(build("HEAD", "/"))
        raw, _how = c.read_to_close(timeout=1.5)
    reply, rest = split_one(raw, head_only=True)
    assert reply.status == 200 and rest == b"", raw
