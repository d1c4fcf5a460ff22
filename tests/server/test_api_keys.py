"""API keys: every route but the probes (and /metrics unless --protect-metrics) needs one; a missing
or wrong key is answered 401 before the body is read and before predict runs.

The predictor appends a line to ``calls.log`` in its directory at every call, so the tests can
tell whether ``predict`` ran.
"""

import json
import re
import signal

import pytest

from support.http_client import Connection, build_request
from support.servers import (
    ready,
    serve_to_exit,
    spawn,
    start,
    stop,
    wait_for_exit,
    wait_for_new,
    write_predictor,
)
from support.tls import Pki, TLSConnection

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

KEY = "k3y-Alpha_0123456789"
SECOND = "second.key-ZZ"

SOURCE = r'''
import lite_serving as serv


class Predictor:
    def __init__(self, onnx):
        self.session = onnx

    def predict(self, data):
        with open("calls.log", "a") as log:
            log.write(f"{len(data)}\n")
        return {"length": len(data)}


if __name__ == "__main__":
    serv.run(Predictor)
'''


def build_double(path):
    """Y = X + X, float32 [n]: a model for the /v2 routes."""
    graph = helper.make_graph([helper.make_node("Add", ["X", "X"], ["Y"])], "double",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def serve_with_keys(directory, *flags, env=None):
    directory.mkdir(parents=True, exist_ok=True)
    build_double(directory / "double.onnx")
    return start(directory, SOURCE, *flags, env=env)


def calls(server):
    path = server.directory / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def ask(server, method, target, headers=None, body=b"", head=False):
    with Connection(server.host, server.port) as conn:
        conn.request(method, target, headers, body)
        return conn.read_response(head=head or method == "HEAD")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = serve_with_keys(tmp_path_factory.mktemp("keys") / "model", "--api-key", KEY,
                              "--api-key", SECOND, "--access-log", "--log-level", "debug")
    yield running
    stop(running)


V2_INFER = ("POST", "/v2/models/double/infer", {"Content-Type": "application/json"},
            json.dumps({"inputs": [{"name": "X", "shape": [2], "datatype": "FP32",
                                    "data": [1, 2]}]}).encode())
ROUTES = [
    ("GET", "/", None, b""),
    ("HEAD", "/", None, b""),
    ("POST", "/", {"Content-Type": "application/json"}, b'{"a": 1}'),
    ("OPTIONS", "/", None, b""),
    ("OPTIONS", "*", None, b""),
    ("GET", "/v2", None, b""),
    ("GET", "/v2/models/double", None, b""),
    ("GET", "/v2/models/double/ready", None, b""),
    V2_INFER,
    ("GET", "/no/such/route", None, b""),
    ("DELETE", "/", None, b""),
    ("POST", "/healthz", {"Content-Type": "application/json"}, b"{}"),
]


@pytest.mark.parametrize("method, target, headers, body", ROUTES)
def test_every_route_needs_a_key(server, method, target, headers, body):
    before = len(calls(server))
    reply = ask(server, method, target, headers, body)
    assert reply.status == 401, reply
    assert reply.header("www-authenticate") == "Bearer"
    if method != "HEAD":
        assert "Authorization: Bearer" in reply.json()["error"]
    assert len(calls(server)) == before


@pytest.mark.parametrize("method, target, headers, body", ROUTES)
@pytest.mark.parametrize("carrier", ["bearer", "x-api-key"])
def test_every_route_answers_with_a_key(server, method, target, headers, body, carrier):
    key = {"bearer": ("Authorization", f"Bearer {KEY}"), "x-api-key": ("X-API-Key", SECOND)}[carrier]
    reply = ask(server, method, target, [*(headers or {}).items(), key], body)
    assert reply.status != 401, reply
    if (method, target) == ("POST", "/"):
        assert reply.json() == {"length": len(body)}
    if (method, target) == V2_INFER[:2]:
        assert reply.json()["outputs"][0]["data"] == [2, 4]


def test_predict_runs_only_with_a_valid_key(server):
    body = b'{"x": 1}'
    before = len(calls(server))
    for headers in ([], [("Authorization", "Bearer wrong")], [("X-API-Key", KEY + "x")],
                    [("Authorization", f"Basic {KEY}")], [("Authorization", KEY)],
                    [("X-API-Key", KEY[:-1])]):
        reply = ask(server, "POST", "/", [("Content-Type", "application/json"), *headers], body)
        assert reply.status == 401, (headers, reply)
    assert len(calls(server)) == before
    for headers in ([("Authorization", f"Bearer {KEY}")], [("authorization", f"bearer {SECOND}")],
                    [("X-API-Key", KEY)], [("X-API-Key", "wrong"), ("X-API-Key", SECOND)]):
        reply = ask(server, "POST", "/", [("Content-Type", "application/json"), *headers], body)
        assert reply.status == 200, (headers, reply)
    assert len(calls(server)) == before + 4


def test_a_wrong_key_is_told_apart_from_a_missing_one(server):
    reply = ask(server, "GET", "/", {"Authorization": "Bearer nope"})
    assert reply.status == 401
    assert reply.header("www-authenticate") == 'Bearer error="invalid_token"'
    assert reply.json() == {"error": "the API key sent is not valid"}


@pytest.mark.parametrize("target", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready",
                                    "/metrics"])
def test_probes_and_metrics_need_no_key(server, target):
    assert ask(server, "GET", target).status == 200
    assert ask(server, "HEAD", target).status == 200


def test_cors_preflight_needs_no_key_and_refusals_carry_cors(server):
    origin = "https://app.example.org"
    reply = ask(server, "OPTIONS", "/", {"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization"})
    assert reply.status == 200, reply
    assert reply.header("access-control-allow-origin") == origin
    assert "authorization" in reply.header("access-control-allow-headers")
    # an OPTIONS with Origin that is not a preflight is an ordinary request
    assert ask(server, "OPTIONS", "/", {"Origin": origin}).status == 401
    refused = ask(server, "POST", "/", {"Origin": origin, "Content-Type": "application/json"},
                  b"{}")
    assert refused.status == 401
    assert refused.header("access-control-allow-origin") == origin  # the page can read why


def test_unauthorised_upload_is_answered_before_its_body_and_not_read(server):
    """A 50 MB upload without a key: the 401 comes before a byte of the body is sent, the
    connection closes, and the server's received bytes grow by the head alone."""
    def received():
        text = ask(server, "GET", "/metrics").body.decode()
        return int(re.search(r"^lite_serving_received_bytes_total(?:\{[^}]*\})? (\d+)", text, re.M)
                   .group(1))

    before_calls = len(calls(server))
    before = received()
    head = build_request("POST", "/", {"Content-Type": "application/octet-stream",
                                       "Content-Length": str(50 * 1024 * 1024)})
    with Connection(server.host, server.port) as conn:
        conn.send(head)
        reply = conn.read_response()
        assert reply.status == 401
        assert reply.header("connection") == "close"
        assert conn.closed_by_peer(timeout=10)
    # the GET /metrics that reads the figure is counted in it too (its head only)
    assert received() - before < 2 * len(head) + 1000
    assert len(calls(server)) == before_calls


@pytest.mark.parametrize("framing", ["expect", "chunked", "too-large"])
def test_unauthorised_bodies_are_refused_first(server, framing):
    headers = {"Content-Type": "application/json"}
    if framing == "expect":      # no 100 Continue: the client need not send the body at all
        headers.update({"Expect": "100-continue", "Content-Length": "1000"})
    elif framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
    else:                        # over --max-body-size: still a 401, the key is checked first
        headers["Content-Length"] = str(10 ** 12)
    before = len(calls(server))
    with Connection(server.host, server.port) as conn:
        conn.request("POST", "/", headers)
        reply = conn.read_response()
        assert reply.status == 401, reply
        assert reply.header("connection") == "close"
        assert conn.closed_by_peer(timeout=10)
    assert len(calls(server)) == before


def test_a_refused_request_without_body_keeps_the_connection(server):
    with Connection(server.host, server.port) as conn:
        conn.request("GET", "/")
        assert conn.read_response().status == 401
        conn.request("POST", "/", {"Content-Type": "application/json", "X-API-Key": KEY}, b"{}")
        assert conn.read_response().json() == {"length": 2}


def test_pipelined_requests_after_a_refused_upload_are_not_run(server):
    """The body of a refused request would be taken for a request: the connection closes."""
    before = len(calls(server))
    smuggled = build_request("POST", "/", {"Content-Type": "application/json",
                                           "X-API-Key": KEY}, b"{}")
    with Connection(server.host, server.port) as conn:
        conn.send(build_request("POST", "/", {"Content-Type": "application/json"}, smuggled))
        reply = conn.read_response()
        assert reply.status == 401
        assert conn.closed_by_peer(timeout=10)
    assert len(calls(server)) == before


def test_keys_never_reach_the_log(server):
    ask(server, "GET", "/?probe=1", {"Authorization": f"Bearer {KEY}"})
    ask(server, "GET", "/", {"X-API-Key": "guess-" + SECOND})
    server.wait_for(re.escape('"GET /?probe=1 HTTP/1.1" 200'))
    server.wait_for(re.escape('"GET / HTTP/1.1" 401'))
    assert KEY not in server.log and SECOND not in server.log


def test_protect_metrics(tmp_path):
    running = serve_with_keys(tmp_path / "model", "--api-key", KEY, "--protect-metrics")
    try:
        assert ask(running, "GET", "/metrics").status == 401
        assert ask(running, "GET", "/metrics", {"X-API-Key": KEY}).status == 200
        assert ask(running, "GET", "/healthz").status == 200
    finally:
        stop(running)


def assert_both_keys_open(running):
    """``running`` refuses a request without a key and answers one with KEY or SECOND."""
    assert ask(running, "GET", "/").status == 401
    assert ask(running, "GET", "/", {"X-API-Key": KEY}).status == 200
    assert ask(running, "GET", "/", {"X-API-Key": SECOND}).status == 200


def test_keys_from_the_environment(tmp_path):
    running = serve_with_keys(tmp_path / "model", env={"LITE_SERVING_API_KEYS": f"{KEY}, {SECOND}"})
    try:
        assert_both_keys_open(running)
    finally:
        stop(running)


def test_keys_given_before_the_directory(tmp_path):
    """``lite-serving --api-key KEY DIR``: the key is the flag's value, not the directory."""
    directory = tmp_path / "model"
    directory.mkdir()
    build_double(directory / "double.onnx")
    write_predictor(directory, SOURCE)
    running = spawn(["-m", "lite_serving", "--api-key", KEY, f"--api-key={SECOND}",
                             "--api-key-file", str(tmp_path / "no-such-file"), str(directory),
                             "--host", "127.0.0.1", "--port", "0"], directory, log_stdout=True)
    try:
        code = wait_for_exit(running)  # --api-key-file's value is not taken for the directory
        assert code == 1 and "cannot read --api-key-file" in running.log, running.log
    finally:
        stop(running)
    running = spawn(["-m", "lite_serving", "--api-key", KEY, f"--api-key={SECOND}",
                             str(directory), "--host", "127.0.0.1", "--port", "0"], directory, log_stdout=True)
    try:
        assert_both_keys_open(ready(running))
    finally:
        stop(running)


def test_repeated_and_listed_keys_in_the_settings(monkeypatch):
    from lite_serving.process.config import parse_config
    monkeypatch.delenv("LITE_SERVING_API_KEYS", raising=False)
    # the fast parser and argparse (which --help or an error sends a command line to): the same
    # keys, in order
    from lite_serving.process.config import build_argparser
    options = build_argparser().parse_args(["--api-key", KEY, f"--api-key={SECOND}"])
    assert options.api_keys == [KEY, SECOND]
    for argv in (["--api-key", KEY, f"--api-key={SECOND}"],
                 ["--api-key", KEY, f"--api-key={SECOND}", "--protect-metrics"]):
        config = parse_config(argv)
        assert config.api_keys == (KEY, SECOND)
        assert KEY not in repr(config) and SECOND not in repr(config)
    monkeypatch.setenv("LITE_SERVING_API_KEYS", f" {KEY}, ,{SECOND},")
    assert parse_config([]).api_keys == (KEY, SECOND)
    assert parse_config(["--api-key", "flag-key"]).api_keys == ("flag-key",)  # the flag wins


def test_key_file_is_reloaded_on_sighup(tmp_path):
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# the keys of the edge clients\n{KEY}\n\n")
    running = serve_with_keys(tmp_path / "model", "--api-key-file", str(key_file))
    try:
        assert ask(running, "GET", "/", {"X-API-Key": KEY}).status == 200
        assert ask(running, "GET", "/", {"X-API-Key": SECOND}).status == 401
        with Connection(running.host, running.port) as kept:
            kept.request("GET", "/", {"X-API-Key": KEY})
            assert kept.read_response().status == 200

            key_file.write_text(f"{SECOND}\n")
            mark = len(running.lines)
            running.proc.send_signal(signal.SIGHUP)
            wait_for_new(running, mark, "API keys reloaded")
            assert ask(running, "GET", "/", {"X-API-Key": KEY}).status == 401
            assert ask(running, "GET", "/", {"X-API-Key": SECOND}).status == 200
            # an open connection stays open and its requests are checked with the new keys
            kept.request("GET", "/", {"X-API-Key": SECOND})
            assert kept.read_response().status == 200

        key_file.unlink()  # unreadable at the next reload: the keys in use stay
        mark = len(running.lines)
        running.proc.send_signal(signal.SIGHUP)
        wait_for_new(running, mark, "API keys not reloaded")
        assert ask(running, "GET", "/", {"X-API-Key": SECOND}).status == 200
        assert running.proc.poll() is None
        assert SECOND not in running.log and KEY not in running.log
    finally:
        stop(running)


def test_key_settings_errors_stop_start_up(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    spaced = tmp_path / "spaced.txt"
    spaced.write_text("good-key\nbad key\n")
    missing = tmp_path / "missing.txt"
    cases = [
        (["--api-key-file", str(missing)], f"cannot read --api-key-file {missing}"),
        (["--api-key-file", str(empty)], f"--api-key-file {empty} holds no key"),
        (["--api-key-file", str(spaced)], f"on line 2 of --api-key-file {spaced}"),
        (["--api-key", "a key with spaces"], "number 1 of --api-key"),
    ]
    for number, (flags, expected) in enumerate(cases):
        code, output = serve_to_exit(tmp_path / f"case{number}", SOURCE, *flags)
        assert code == 1, output
        assert expected in output, output
        assert "bad key" not in output and "a key with spaces" not in output


def test_keys_over_tls(tmp_path):
    pki = Pki(tmp_path)
    running = serve_with_keys(tmp_path / "model", *pki.flags(), "--api-key", KEY)
    try:
        with TLSConnection(running.host, running.port, pki.client_context()) as conn:
            conn.request("POST", "/", {"Content-Type": "application/json"}, b"{}")
            assert conn.read_response().status == 401
            assert conn.closed_by_peer(timeout=10)
        with TLSConnection(running.host, running.port, pki.client_context()) as conn:
            conn.request("POST", "/", {"Content-Type": "application/json",
                                       "Authorization": f"Bearer {KEY}"}, b"{}")
            assert conn.read_response().json() == {"length": 2}
        assert calls(running) == ["2"]
    finally:
        stop(running)


def test_refusals_are_counted_in_metrics(server):
    def unauthorised():
        text = ask(server, "GET", "/metrics").body.decode()
        return int(re.search(r'^lite_serving_requests_total\{[^}]*code="4xx"\} (\d+)', text, re.M)
                   .group(1))

    before = unauthorised()
    ask(server, "GET", "/")
    ask(server, "GET", "/")
    assert unauthorised() == before + 2

