"""Errors raised in predict: ServingError → its status and payload; anything else → 500."""


from support.http_client import Connection, build_request, post_json, request
from support.servers import module_server, wait_for_new

SOURCE = """
    import openbayes_serving as serv
    from openbayes_serving.common import ServingError


    class Predictor:
        def predict(self, json):
            kind = json["kind"]
            if kind == "custom":
                raise ServingError("bad field", 422, {"field": "x", "n": [1, 2]})
            if kind == "default":
                raise ServingError("plain refusal")
            if kind == "payload_error_key":
                raise ServingError("the message wins", 409, {"error": "payload's", "k": 1})
            if kind == "keywords":
                raise ServingError(message="by keywords", status_code=503, payload={"retry": True})
            if kind == "unicode":
                raise ServingError("输入无效 ✗", 400, {"字段": "值"})
            if kind == "crash":
                raise ZeroDivisionError("distinctive-crash-text")
            return {"ok": kind}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


server = module_server("errors", SOURCE)


def test_serving_error_status_and_payload(server):
    resp = post_json(server, {"kind": "custom"})
    assert resp.status == 422
    assert resp.media_type() == "application/json"
    assert resp.json() == {"field": "x", "n": [1, 2], "error": "bad field"}


def test_serving_error_defaults_to_400(server):
    resp = post_json(server, {"kind": "default"})
    assert resp.status == 400
    assert resp.json() == {"error": "plain refusal"}


def test_serving_error_message_overrides_payload_error(server):
    resp = post_json(server, {"kind": "payload_error_key"})
    assert resp.status == 409
    assert resp.json() == {"error": "the message wins", "k": 1}


def test_serving_error_keyword_arguments(server):
    resp = post_json(server, {"kind": "keywords"})
    assert resp.status == 503
    assert resp.json() == {"retry": True, "error": "by keywords"}


def test_serving_error_non_ascii(server):
    resp = post_json(server, {"kind": "unicode"})
    assert resp.status == 400
    assert resp.json() == {"字段": "值", "error": "输入无效 ✗"}


def test_serving_error_class_attributes():
    import lite_serving
    from lite_serving.common import ServingError
    assert ServingError is lite_serving.ServingError
    err = ServingError("m", 418, {"a": 1})
    assert (err.message, err.status_code) == ("m", 418)
    assert isinstance(err, Exception)


def test_exception_is_500_json_with_traceback_logged(server):
    mark = len(server.lines)
    resp = post_json(server, {"kind": "crash"})
    assert resp.status == 500
    assert resp.media_type() == "application/json"
    assert isinstance(resp.json().get("error"), str)
    wait_for_new(server, mark, r"Traceback \(most recent call last\)")
    wait_for_new(server, mark, r"ZeroDivisionError: distinctive-crash-text")


def test_server_keeps_serving_after_an_exception(server):
    with Connection(server.host, server.port) as conn:
        body = b'{"kind": "crash"}'
        conn.send(build_request("POST", "/", [("Content-Type", "application/json")], body))
        assert conn.read_response().status == 500
        # the same connection goes on
        conn.send(build_request("POST", "/", [("Content-Type", "application/json")],
                                b'{"kind": "fine"}'))
        resp = conn.read_response()
        assert resp.status == 200 and resp.json() == {"ok": "fine"}
    assert post_json(server, {"kind": "again"}).json() == {"ok": "again"}
    assert request(server, "GET", "/").status == 200
