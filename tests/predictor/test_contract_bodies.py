"""What predict's arguments receive: json, payload, data, params/args, headers, request."""

import ast
import json

import msgpack
import pytest

from support.http_client import (
    Connection,
    build_request,
    chunked,
    post,
    post_json,
    request,
)
from support.servers import module_server

# ``json`` by annotation; counts its calls so a test can prove predict was not called.
JSON_SOURCE = """
    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            self.calls = 0

        def predict(self, body: "json", query: "params"):
            self.calls += 1
            if query.get("mode") == "count":
                return {"calls": self.calls}
            return repr(body)


    if __name__ == "__main__":
        serv.run(Predictor)
"""

# Every other argument, reported with repr() so str and bytes stay apart.
INSPECT_SOURCE = """
    import openbayes_serving as serv


    def attempt(f):
        try:
            return f()
        except Exception as exc:
            return "ERR " + type(exc).__name__


    class Predictor:
        def __init__(self):
            pass

        def predict(self, payload, data, params, args, headers, request):
            out = {
                "payload": payload,
                "data": data,
                "params_a": attempt(lambda: params.get("a")),
                "params_getlist_a": attempt(lambda: list(params.getlist("a"))),
                "params_index_b": attempt(lambda: params["b"]),
                "params_c": attempt(lambda: params.get("c")),
                "params_empty": attempt(lambda: params.get("empty")),
                "params_missing": attempt(lambda: params.get("missing")),
                "params_in_b": attempt(lambda: "b" in params),
                "params_in_missing": attempt(lambda: "missing" in params),
                "params_keys": attempt(lambda: list(params)),
                "args_getlist_a": attempt(lambda: list(args.getlist("a"))),
                "args_c": attempt(lambda: args.get("c")),
                "h_get_lower": attempt(lambda: headers.get("x-custom")),
                "h_get_upper": attempt(lambda: headers.get("X-CUSTOM")),
                "h_index": attempt(lambda: headers["X-Custom"]),
                "h_in": attempt(lambda: "x-CUSTOM" in headers),
                "h_in_missing": attempt(lambda: "x-absent" in headers),
                "h_get_missing": attempt(lambda: headers.get("x-absent", "dflt")),
                "h_items": attempt(lambda: [(k.lower(), v) for k, v in headers.items()]),
                "h_dup_get": attempt(lambda: headers.get("x-dup")),
                "h_dup_index": attempt(lambda: headers["X-DUP"]),
                "r_method": attempt(lambda: request.method),
                "r_path": attempt(lambda: request.path),
                "r_args_a": attempt(lambda: list(request.args.getlist("a"))),
                "r_args_c": attempt(lambda: request.args.get("c")),
                "r_header": attempt(lambda: request.headers.get("x-custom")),
                "r_data": attempt(lambda: request.data),
                "r_get_data": attempt(lambda: request.get_data()),
                "r_get_json_silent": attempt(lambda: request.get_json(silent=True)),
                "r_mimetype": attempt(lambda: request.mimetype),
            }
            if request.mimetype == "application/json":
                out["r_json"] = attempt(lambda: request.json)
            return repr(out)


    if __name__ == "__main__":
        serv.run(Predictor)
"""

QUERY = "a=1&a=two&b=x+y&c=%E4%BD%A0%E5%A5%BD%20%2B&empty="


json_server = module_server("json", JSON_SOURCE)


inspect_server = module_server("inspect", INSPECT_SOURCE)


def value_of(resp):
    assert resp.status == 200, resp
    assert resp.media_type() == "text/plain"
    return ast.literal_eval(resp.text())


def calls(server):
    resp = post_json(server, {}, target="/?mode=count")
    assert resp.status == 200, resp
    return resp.json()["calls"]


# -- json -------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=latin-1",
    "APPLICATION/JSON",
    "Application/Json; Charset=UTF-8",
])
def test_json_body_is_parsed(json_server, content_type):
    doc = {"s": "héllo ✓", "n": [1, 2.5, None, True], "o": {"k": "v"}}
    resp = post(json_server, json.dumps(doc, ensure_ascii=False).encode("utf-8"), content_type)
    assert value_of(resp) == doc


MSGPACK_TYPES = ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack",
                 "application/vnd.messagepack"]


@pytest.mark.parametrize("content_type", MSGPACK_TYPES + ["APPLICATION/MSGPACK; charset=binary"])
def test_msgpack_body_is_unpacked_str_as_str_bin_as_bytes(json_server, content_type):
    doc = {"s": "héllo", "b": b"\x00\x01\xff", "n": [1, -2, 2.5, None, False], "m": {"k": b"v"}}
    resp = post(json_server, msgpack.packb(doc, use_bin_type=True), content_type)
    got = value_of(resp)
    assert got == doc
    assert isinstance(got["s"], str) and isinstance(got["b"], bytes)


def test_annotation_selects_the_provider(json_server):
    # predict(self, body: "json", query: "params"): both names unknown, both annotated.
    resp = post_json(json_server, [1, 2, 3], target="/?mode=repr")
    assert value_of(resp) == [1, 2, 3]


@pytest.mark.parametrize("content_type,body", [
    ("application/json", b"{not json"),
    ("application/json", b""),
    ("application/json", b'{"a": 1} trailing'),
    ("application/msgpack", b"\xc1"),
    ("application/x-msgpack", b"\x92\x01"),
])
def test_unparseable_body_is_400_json_error_and_predict_not_called(json_server, content_type, body):
    before = calls(json_server)
    resp = post(json_server, body, content_type)
    assert resp.status == 400
    assert resp.media_type() == "application/json"
    assert isinstance(resp.json().get("error"), str)
    assert calls(json_server) == before + 1  # only the counting call itself


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_json_argument_refuses_other_media_types_without_calling_predict(json_server, content_type):
    before = calls(json_server)
    resp = post(json_server, b'{"a": 1}', content_type)
    assert resp.status == 400
    error = resp.json()["error"]
    assert error.startswith("input must be JSON or MessagePack: the body was sent ")
    assert (content_type or "without a Content-Type") in error
    assert "Content-Type: application/json" in error  # what to do
    assert calls(json_server) == before + 1


def test_chunked_json_body_with_extensions_and_trailers(json_server):
    body = chunked(b'{"word": ', b'"Wiki', b'pedia"}', extensions={0: b";ext=1", 2: b';name="v"'},
                   trailers=[("X-Checksum", "abc")])
    resp = request(json_server, "POST", "/", [("Content-Type", "application/json"),
                                             ("Transfer-Encoding", "chunked")], body)
    assert value_of(resp) == {"word": "Wikipedia"}


# -- payload, data ----------------------------------------------------------

def test_payload_and_data_for_json(inspect_server):
    raw = b'{"k": [1, 2]}'
    got = value_of(post(inspect_server, raw, "application/json"))
    assert got["payload"] == {"k": [1, 2]}
    assert got["data"] == raw


def test_payload_and_data_for_msgpack(inspect_server):
    raw = msgpack.packb({"k": b"\x00bin", "t": "text"}, use_bin_type=True)
    got = value_of(post(inspect_server, raw, "application/vnd.msgpack"))
    assert got["payload"] == {"k": b"\x00bin", "t": "text"}
    assert got["data"] == raw


@pytest.mark.parametrize("content_type", [None, "text/plain", "image/png"])
def test_payload_is_raw_bytes_for_other_media_types(inspect_server, content_type):
    raw = b"\x89PNG raw \x00\xff bytes"
    got = value_of(post(inspect_server, raw, content_type))
    assert got["payload"] == raw
    assert got["data"] == raw


def test_data_of_a_chunked_body_is_decoded(inspect_server):
    body = chunked(b"Wiki", b"pedia", b" in ", b"chunks", extensions={1: b";a=b;c"},
                   trailers=[("X-Trailer", "t1"), ("X-Other", "t2")])
    resp = request(inspect_server, "POST", "/", [("Content-Type", "application/octet-stream"),
                                                 ("Transfer-Encoding", "chunked")], body)
    got = value_of(resp)
    assert got["data"] == b"Wikipedia in chunks"
    assert got["payload"] == b"Wikipedia in chunks"


def test_empty_body(inspect_server):
    got = value_of(post(inspect_server, b"", None))
    assert got["data"] == b""
    assert got["payload"] == b""


# -- params / args ------------------------------------------------------------

def test_params_multidict(inspect_server):
    got = value_of(post(inspect_server, b"x", "text/plain", target="/?" + QUERY))
    assert got["params_a"] == "1"
    assert got["params_getlist_a"] == ["1", "two"]
    assert got["params_index_b"] == "x y"          # "+" is a space
    assert got["params_c"] == "你好 +"              # UTF-8 percent-decoding, %2B is "+"
    assert got["params_empty"] == ""
    assert got["params_missing"] is None
    assert got["params_in_b"] is True
    assert got["params_in_missing"] is False
    assert got["params_keys"] == ["a", "b", "c", "empty"]


def test_params_keep_invalid_utf8_escapes_as_escapes(inspect_server):
    # werkzeug (the reference) leaves percent-escapes that are not UTF-8 as upper-case escapes
    got = value_of(post(inspect_server, b"x", "text/plain", target="/?a=%ff&b=%zz&c=%E4%BD&a=%41"))
    assert got["params_getlist_a"] == ["%FF", "A"]
    assert got["params_index_b"] == "%zz"
    assert got["params_c"] == "%E4%BD"


def test_args_is_an_alias_of_params(inspect_server):
    got = value_of(post(inspect_server, b"x", "text/plain", target="/?" + QUERY))
    assert got["args_getlist_a"] == ["1", "two"]
    assert got["args_c"] == "你好 +"


def test_params_without_query_string(inspect_server):
    got = value_of(post(inspect_server, b"x", "text/plain"))
    assert got["params_keys"] == []
    assert got["params_getlist_a"] == []


# -- headers ----------------------------------------------------------------

def test_headers_case_insensitive(inspect_server):
    got = value_of(post(inspect_server, b"x", "text/plain", headers=[("X-Custom", "Value 1")]))
    assert got["h_get_lower"] == "Value 1"
    assert got["h_get_upper"] == "Value 1"
    assert got["h_index"] == "Value 1"
    assert got["h_in"] is True
    assert got["h_in_missing"] is False
    assert got["h_get_missing"] == "dflt"
    items = dict(got["h_items"])
    assert items["x-custom"] == "Value 1"
    assert items["content-type"] == "text/plain"


def test_header_value_leading_whitespace_is_not_part_of_the_value(inspect_server):
    with Connection(inspect_server.host, inspect_server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nX-Custom: \t  spaced value\r\n"
                  b"Content-Length: 1\r\n\r\nx")
        got = value_of(conn.read_response())
    assert got["h_get_lower"] == "spaced value"


def test_repeated_headers_are_one_comma_joined_field(inspect_server):
    # Flask's request.headers under the reference (WSGI) holds a repeated field once,
    # its values joined by ",": get, [] and items() all see "1,2".
    got = value_of(post(inspect_server, b"x", "text/plain",
                        headers=[("X-Dup", "1"), ("X-Dup", "2")]))
    assert got["h_dup_get"] == "1,2"
    assert got["h_dup_index"] == "1,2"
    assert [v for k, v in got["h_items"] if k == "x-dup"] == ["1,2"]


# -- request (Flask's facade) -----------------------------------------------

def test_request_object_for_json(inspect_server):
    raw = b'{"z": "\xc3\xa9"}'
    resp = post(inspect_server, raw, "application/json; charset=utf-8", target="/?" + QUERY,
                headers=[("X-Custom", "abc")])
    got = value_of(resp)
    assert got["r_method"] == "POST"
    assert got["r_path"] == "/"
    assert got["r_args_a"] == ["1", "two"]
    assert got["r_args_c"] == "你好 +"
    assert got["r_header"] == "abc"
    assert got["r_data"] == raw
    assert got["r_get_data"] == raw
    assert got["r_json"] == {"z": "é"}
    assert got["r_get_json_silent"] == {"z": "é"}
    assert got["r_mimetype"] == "application/json"


def test_request_object_for_other_bodies(inspect_server):
    raw = b"plain words"
    got = value_of(post(inspect_server, raw, "Text/Plain; charset=utf-8"))
    assert got["r_get_data"] == raw
    assert got["r_data"] == raw
    assert got["r_get_json_silent"] is None
    assert got["r_mimetype"] == "text/plain"


def test_request_get_json_silent_on_bad_json(inspect_server):
    # payload would answer 400 for bad JSON, so this server sees it only as raw bytes:
    # text/plain carries the bad text, get_json(silent=True) must not raise.
    got = value_of(post(inspect_server, b"{bad", "text/plain"))
    assert got["r_get_json_silent"] is None


def test_pipelined_requests_get_their_own_arguments(inspect_server):
    with Connection(inspect_server.host, inspect_server.port) as conn:
        conn.send(build_request("POST", "/?a=first", [("X-Custom", "one"),
                                                      ("Content-Type", "text/plain")], b"1")
                  + build_request("POST", "/?a=second", [("X-Custom", "two"),
                                                         ("Content-Type", "text/plain")], b"22"))
        first, second = conn.read_responses(2)
    first, second = value_of(first), value_of(second)
    assert (first["params_a"], first["h_get_lower"], first["data"]) == ("first", "one", b"1")
    assert (second["params_a"], second["h_get_lower"], second["data"]) == ("second", "two", b"22")
