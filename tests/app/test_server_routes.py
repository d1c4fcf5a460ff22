"""Routes: GET/HEAD/POST/OPTIONS on /, CORS on every answer, 404 and 405."""

import pytest

from support.http_client import Connection, build_request, post, post_json, request
from support.servers import module_server

SOURCE = """
    import openbayes_serving as serv
    from openbayes_serving.common import ServingError


    class Predictor:
        def __init__(self):
            pass

        def predict(self, payload, params):
            if params.get("fail") == "crash":
                raise RuntimeError("boom")
            if params.get("fail") == "serving":
                raise ServingError("refused", 418, {"detail": 1})
            return {"got": payload}


    if __name__ == "__main__":
        serv.run(Predictor)
"""

ORIGIN = "https://app.example.com"


server = module_server("routes", SOURCE)


def test_get_root_answers_json_message(server):
    resp = request(server, "GET", "/")
    assert resp.status == 200
    assert resp.media_type() == "application/json"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]


def test_get_root_with_query_string_is_still_root(server):
    resp = request(server, "GET", "/?probe=1")
    assert resp.status == 200
    assert "message" in resp.json()


def test_head_root_has_get_headers_and_no_body(server):
    get = request(server, "GET", "/")
    with Connection(server.host, server.port) as conn:
        # HEAD then GET in one write: if HEAD's answer carried a body, the GET's answer
        # would not start where the HEAD's head ends.
        conn.send(build_request("HEAD", "/") + build_request("GET", "/"))
        head = conn.read_response(head=True)
        after = conn.read_response()
    assert head.status == 200
    assert head.media_type() == "application/json"
    assert head.header("content-length") == str(len(get.body))
    assert after.status == 200
    assert after.json() == get.json()


def test_post_root_calls_predict(server):
    resp = post_json(server, {"x": [1, 2]})
    assert resp.status == 200
    assert resp.json() == {"got": {"x": [1, 2]}}


def test_options_without_origin_is_empty_200(server):
    resp = request(server, "OPTIONS", "/")
    assert resp.status == 200
    assert resp.body == b""
    assert resp.header("content-length") == "0"


def test_options_preflight_with_origin(server):
    resp = request(server, "OPTIONS", "/", [
        ("Origin", ORIGIN),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "Content-Type, X-Custom-Thing"),
    ])
    assert resp.status == 200
    assert resp.body == b""
    assert resp.header("access-control-allow-origin") == ORIGIN
    assert resp.header("access-control-allow-credentials") == "true"
    methods = {m.strip().upper() for m in (resp.header("access-control-allow-methods") or "").split(",")}
    assert "POST" in methods
    allowed = {h.strip().lower() for h in (resp.header("access-control-allow-headers") or "").split(",")}
    assert {"content-type", "x-custom-thing"} <= allowed


CORS_CASES = [
    ("GET", "/", [], b"", 200),
    ("HEAD", "/", [], b"", 200),
    ("OPTIONS", "/", [], b"", 200),
    ("POST", "/", [("Content-Type", "application/json")], b'{"a": 1}', 200),
    ("POST", "/", [("Content-Type", "application/json")], b"{not json", 400),
    ("POST", "/?fail=serving", [("Content-Type", "application/json")], b"{}", 418),
    ("POST", "/?fail=crash", [("Content-Type", "application/json")], b"{}", 500),
    ("GET", "/no/such/path", [], b"", 404),
    ("POST", "/predict", [("Content-Type", "application/json")], b"{}", 404),
    ("DELETE", "/", [], b"", 405),
]


@pytest.mark.parametrize("method,target,headers,body,status", CORS_CASES,
                         ids=[f"{c[0]} {c[1]} {c[4]}" for c in CORS_CASES])
def test_cors_headers_on_every_answer_to_a_request_with_origin(server, method, target, headers,
                                                               body, status):
    resp = request(server, method, target, [("Origin", ORIGIN), *headers], body)
    assert resp.status == status
    assert resp.header("access-control-allow-origin") == ORIGIN
    assert resp.header("access-control-allow-credentials") == "true"
    vary = {v.strip().lower() for value in resp.header_list("vary") for v in value.split(",")}
    assert "origin" in vary


@pytest.mark.parametrize("method,target", [
    ("GET", "/predict"), ("GET", "/index.html"), ("POST", "/foo"), ("GET", "//"),
    ("HEAD", "/nothing-here"),
])
def test_other_paths_are_404(server, method, target):
    headers = [("Content-Type", "application/json")] if method == "POST" else []
    resp = request(server, method, target, headers, b"{}" if method == "POST" else b"")
    assert resp.status == 404


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_on_root_are_405_with_allow(server, method):
    resp = request(server, method, "/")
    assert resp.status == 405
    allow = {m.strip().upper() for m in (resp.header("allow") or "").split(",")}
    assert {"GET", "POST"} <= allow


def test_404_and_405_do_not_call_predict(server):
    # predict would answer 200 {"got": ...}; neither refusal may reach it.
    assert post(server, b"{}", "application/json", target="/other").status == 404
    assert request(server, "PUT", "/", [("Content-Type", "application/json")], b"{}").status == 405
