"""What predict returns → the answer: JSON/MessagePack by Accept, text, bytes, responses, numpy."""

import base64
import importlib.util
import re

import pytest

from support.http_client import post, request
from support.servers import module_server, wait_for_new

SOURCE = """
    try:
        import numpy as np
    except ImportError:  # the numpy tests skip; everything else runs
        np = None

    import lite_serving
    import openbayes_serving as serv

    try:
        import flask
    except ImportError:
        flask = None


    def flask_response():
        resp = flask.Response(b"flask body \\xe2\\x9c\\x93", status=202, mimetype="text/html")
        resp.headers["X-Flask"] = "yes"
        resp.set_cookie("first", "1")
        resp.set_cookie("second", "2")
        return resp


    RESULTS = {
        "dict": lambda: {"a": 1, "b": [1, 2], "c": None, "d": {"e": True}},
        "list": lambda: [1, "two", 3.5, None],
        "tuple": lambda: (1, 2, "x", (3, 4)),
        "bytes_inside": lambda: {"raw": b"\\xfb\\xff\\xbf\\x00", "nested": [b"hi", {"x": b""}]},
        "unicode": lambda: {"text": "h\\u00e9llo \\u4e16\\u754c \\U0001f389", "k\\u00e9y": "v"},
        "str": lambda: "class 1 \\u2014 \\u00fc",
        "png": lambda: b"\\x89PNG\\r\\n\\x1a\\n rest of the image",
        "jpeg": lambda: b"\\xff\\xd8\\xff\\xe0 rest of the image",
        "other_bytes": lambda: b"\\x00\\x01 plain bytes",
        "empty_bytes": lambda: b"",
        "lite_response": lambda: lite_serving.Response(b"a,b\\n1,2\\n", status=201,
                                                       headers={"X-Thing": "yes"},
                                                       mimetype="text/csv"),
        "lite_response_json": lambda: lite_serving.Response('{"ok": true}', status=299,
                                                            mimetype="application/json"),
        "lite_response_cookies": lambda: lite_serving.Response(
            "two cookies", status=200,
            headers=[("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2"), ("X-Other", "o")]),
        "flask_response": flask_response,
        "numpy": lambda: {
            "arr": np.arange(6, dtype=np.int64).reshape(2, 3),
            "farr": np.array([0.5, 1.5], dtype=np.float32),
            "f32": np.float32(1.5),
            "f64": np.float64(2.25),
            "i64": np.int64(7),
            "i8": np.int8(-3),
            "b": np.bool_(True),
            "nested": [np.array([1, 2]), {"deep": np.uint16(9)}],
        },
        "none": lambda: None,
        "int": lambda: 42,
        "object": lambda: object(),
    }


    class Predictor:
        def __init__(self):
            pass

        def predict(self, params):
            return RESULTS[params["kind"]]()


    if __name__ == "__main__":
        serv.run(Predictor)
"""

MSGPACK_TYPES = ["application/msgpack", "application/x-msgpack", "application/vnd.msgpack",
                 "application/vnd.messagepack"]
DICT = {"a": 1, "b": [1, 2], "c": None, "d": {"e": True}}


server = module_server("results", SOURCE)


def result(server, kind, accept=None):
    headers = [("Accept", accept)] if accept is not None else []
    return post(server, b"", None, target=f"/?kind={kind}", headers=headers)


def json_of(resp):
    assert resp.status == 200, resp
    assert resp.media_type() == "application/json"
    return resp.json()


def msgpack_of(resp):
    assert resp.status == 200, resp
    assert resp.header("content-type") == "application/msgpack"
    return resp.msgpack()


# -- structured results and Accept ------------------------------------------

def test_dict_is_json_by_default(server):
    assert json_of(result(server, "dict")) == DICT


def test_list_is_json(server):
    assert json_of(result(server, "list")) == [1, "two", 3.5, None]


def test_tuple_is_a_json_array(server):
    assert json_of(result(server, "tuple")) == [1, 2, "x", [3, 4]]


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/*",
                                    "text/html, application/json",
                                    "application/json; charset=utf-8"])
def test_json_when_accepted(server, accept):
    assert json_of(result(server, "dict", accept)) == DICT


@pytest.mark.parametrize("accept", MSGPACK_TYPES + ["APPLICATION/MSGPACK"])
def test_msgpack_when_accepted(server, accept):
    assert msgpack_of(result(server, "dict", accept)) == DICT


def test_tuple_is_a_msgpack_array(server):
    assert msgpack_of(result(server, "tuple", "application/msgpack")) == [1, 2, "x", [3, 4]]


@pytest.mark.parametrize("accept,kind", [
    ("application/json;q=0.1, application/msgpack", "msgpack"),
    ("application/msgpack;q=0.5, application/json", "json"),
    ("application/json;q=0.4, application/x-msgpack;q=0.8", "msgpack"),
    ("text/html, application/msgpack;q=0.9", "msgpack"),
    ("application/msgpack;q=0, */*", "json"),
    ("application/json;q=0, application/msgpack;q=0.1", "msgpack"),
])
def test_q_values_are_respected(server, accept, kind):
    resp = result(server, "dict", accept)
    if kind == "json":
        assert json_of(resp) == DICT
    else:
        assert msgpack_of(resp) == DICT


@pytest.mark.parametrize("accept", ["text/html", "image/png, text/*", "application/msgpack;q=0",
                                    "application/json;q=0"])
def test_nothing_acceptable_is_406(server, accept):
    resp = result(server, "dict", accept)
    assert resp.status == 406
    assert resp.media_type() == "application/json"
    assert isinstance(resp.json().get("error"), str)


def test_bytes_inside_json_are_standard_padded_base64(server):
    got = json_of(result(server, "bytes_inside"))
    assert got["raw"] == base64.b64encode(b"\xfb\xff\xbf\x00").decode() == "+/+/AA=="
    assert got["nested"] == ["aGk=", {"x": ""}]


def test_bytes_inside_msgpack_stay_binary(server):
    got = msgpack_of(result(server, "bytes_inside", "application/msgpack"))
    assert got == {"raw": b"\xfb\xff\xbf\x00", "nested": [b"hi", {"x": b""}]}


def test_non_ascii_text_in_json(server):
    resp = result(server, "unicode")
    assert json_of(resp) == {"text": "héllo 世界 🎉", "kéy": "v"}


def test_non_ascii_text_in_msgpack(server):
    got = msgpack_of(result(server, "unicode", "application/msgpack"))
    assert got == {"text": "héllo 世界 🎉", "kéy": "v"}


needs_numpy = pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is not installed")


@needs_numpy
def test_numpy_values_in_json(server):
    got = json_of(result(server, "numpy"))
    assert got == {"arr": [[0, 1, 2], [3, 4, 5]], "farr": [0.5, 1.5], "f32": 1.5, "f64": 2.25,
                   "i64": 7, "i8": -3, "b": True, "nested": [[1, 2], {"deep": 9}]}


@needs_numpy
def test_numpy_values_in_msgpack(server):
    got = msgpack_of(result(server, "numpy", "application/msgpack"))
    assert got == {"arr": [[0, 1, 2], [3, 4, 5]], "farr": [0.5, 1.5], "f32": 1.5, "f64": 2.25,
                   "i64": 7, "i8": -3, "b": True, "nested": [[1, 2], {"deep": 9}]}


# -- text and bytes ---------------------------------------------------------

def test_str_is_utf8_text_plain(server):
    resp = result(server, "str")
    assert resp.status == 200
    assert re.sub(r"\s", "", resp.header("content-type")).lower() == "text/plain;charset=utf-8"
    assert resp.body == "class 1 — ü".encode("utf-8")


def test_str_ignores_accept(server):
    resp = result(server, "str", "application/msgpack")
    assert resp.status == 200
    assert resp.media_type() == "text/plain"
    assert resp.text() == "class 1 — ü"


@pytest.mark.parametrize("kind,media_type,body", [
    ("png", "image/png", b"\x89PNG\r\n\x1a\n rest of the image"),
    ("jpeg", "image/jpeg", b"\xff\xd8\xff\xe0 rest of the image"),
    ("other_bytes", "application/octet-stream", b"\x00\x01 plain bytes"),
    ("empty_bytes", "application/octet-stream", b""),
])
def test_bytes_are_sent_as_they_are_with_a_sniffed_type(server, kind, media_type, body):
    resp = result(server, kind)
    assert resp.status == 200
    assert resp.media_type() == media_type
    assert resp.body == body
    assert resp.header("content-length") == str(len(body))


# -- response objects -------------------------------------------------------

def test_lite_serving_response_is_sent_as_given(server):
    resp = result(server, "lite_response")
    assert resp.status == 201
    assert resp.media_type() == "text/csv"
    assert resp.header("x-thing") == "yes"
    assert resp.body == b"a,b\n1,2\n"
    assert len(resp.header_list("content-type")) == 1
    assert len(resp.header_list("content-length")) == 1


def test_lite_serving_response_with_str_body(server):
    resp = result(server, "lite_response_json")
    assert resp.status == 299
    assert resp.media_type() == "application/json"
    assert resp.json() == {"ok": True}


def test_lite_serving_response_repeated_headers(server):
    resp = result(server, "lite_response_cookies")
    assert resp.status == 200
    assert resp.header_list("set-cookie") == ["a=1; Path=/", "b=2"]
    assert resp.header("x-other") == "o"
    assert resp.media_type() == "text/plain"
    assert resp.body == b"two cookies"


def test_flask_response_is_sent_as_given(server):
    pytest.importorskip("flask")
    resp = result(server, "flask_response")
    assert resp.status == 202
    assert resp.media_type() == "text/html"
    assert resp.header("x-flask") == "yes"
    cookies = resp.header_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("first=1") and cookies[1].startswith("second=2")
    assert resp.body == "flask body ✓".encode("utf-8")
    assert len(resp.header_list("content-length")) == 1
    assert resp.header("content-length") == str(len(resp.body))


# -- invalid results ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["none", "int", "object"])
def test_invalid_result_is_500_with_a_log_line_naming_valid_types(server, kind):
    mark = len(server.lines)
    resp = result(server, kind)
    assert resp.status == 500
    # The log explains what predict may return: a line naming dict, list, str and bytes.
    wait_for_new(server, mark, r"(?=.*\bdict\b)(?=.*\blist\b)(?=.*\bstr\b)(?=.*\bbytes\b)")


def test_server_answers_after_an_invalid_result(server):
    assert result(server, "none").status == 500
    assert json_of(result(server, "dict")) == DICT
    assert request(server, "GET", "/").status == 200
