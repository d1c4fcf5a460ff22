"""What an operator sees: the command line, paths, the start-up log, the access log, request ids,
structured logs, CORS and the messages that tell a client what to do."""

import json
import os
import re
import stat
import sys

import pytest

from support.http_client import Connection, post, post_json, request
from support.predictors import APP_LOGGING
from support.servers import (
    ECHO,
    kill,
    launch,
    module_server,
    ready,
    run_to_exit,
    start,
    wait_for_new,
    write_predictor,
)

KEY = "k-operator-0123"


def lite_serving_command(tmp_path):
    """An executable named ``lite-serving`` (as the installed console script is named)."""
    script = tmp_path / "bin" / "lite-serving"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom lite_serving.__main__ import main\n"
                      "sys.exit(main())\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def run_command(args, cwd):
    """Run a command to its end with the tests' lite_serving; (status, output)."""
    import subprocess

    from support.servers import clean_env
    proc = subprocess.run(args, cwd=cwd, env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


# -- 9. the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("flags,meant", [(["--prot", "18013"], "--protect-metrics"),
                                         (["--worker", "2"], "--workers")])
def test_abbreviated_flags_are_refused_naming_the_flag_meant(tmp_path, flags, meant):
    directory = write_predictor(tmp_path / "m", ECHO)
    code, output = run_to_exit(["-m", "lite_serving", str(directory), *flags], tmp_path)
    assert code == 2, output
    first = output.splitlines()[0]
    assert first.startswith("python -m lite_serving: error: unrecognized arguments"), output
    assert f"did you mean {meant}?" in first
    assert "usage:" not in output  # one line and a pointer to --help, not the 13-line usage


def test_errors_name_the_command_as_typed(tmp_path):
    directory = write_predictor(tmp_path / "m", ECHO)
    command = lite_serving_command(tmp_path)
    code, output = run_command([str(command), str(directory), "--workers", "0"], tmp_path)
    assert code == 2, output
    assert output.splitlines()[0] == "lite-serving: error: --threads must be >= 0 and --workers >= 1"
    assert "predictor.py: error" not in output and "python -m" not in output


def test_help_names_the_units(tmp_path):
    code, output = run_to_exit(["-m", "lite_serving", "--help"], tmp_path)
    assert code == 0
    assert re.search(r"--max-batch-size REQUESTS\s", output), output
    assert re.search(r"--max-batch-delay MS\s", output), output


def test_an_unknown_variable_is_named_with_the_closest_setting(tmp_path):
    server = start(tmp_path / "m", ECHO, env={"LITE_SERVING_WOKERS": "2"})
    try:
        server.wait_for(r"WARNING .*LITE_SERVING_WOKERS is not a lite_serving setting and is "
                        r"ignored; did you mean LITE_SERVING_WORKERS\?")
    finally:
        kill(server)


# -- 2. relative paths ---------------------------------------------------------------------------

def test_relative_paths_are_relative_to_where_the_command_runs(tmp_path):
    """``lite-serving DIR --api-key-file keys.txt`` reads keys.txt of the current directory,
    not of DIR (the process moves into DIR)."""
    directory = write_predictor(tmp_path / "m", ECHO)
    (tmp_path / "keys.txt").write_text(KEY + "\n")
    server = launch(directory, "--host", "127.0.0.1", "--port", "0", "--api-key-file", "keys.txt",
                    cwd=tmp_path)
    try:
        ready(server)
        assert post_json(server, {"a": 1}).status == 401
        answer = post_json(server, {"a": 1}, headers={"X-API-Key": KEY})
        assert answer.status == 200 and answer.json() == {"a": 1}
    finally:
        kill(server)


def test_a_missing_relative_file_is_named_by_its_absolute_path(tmp_path):
    directory = write_predictor(tmp_path / "m", ECHO)
    code, output = run_to_exit(["-m", "lite_serving", str(directory), "--port", "0",
                                "--ssl-certfile", "cert.pem"], tmp_path)
    assert code == 1, output
    assert f"cannot read --ssl-certfile {tmp_path / 'cert.pem'}: No such file" in output, output


# -- 8. messages that say what to do ---------------------------------------------------------------

echo = module_server("echo", ECHO, "--max-body-size", "1000")


def test_json_sent_as_a_form_names_the_type_and_the_fix(echo):
    answer = post(echo, b'{"a": 1}', "application/x-www-form-urlencoded")  # curl -d
    assert answer.status == 400
    error = answer.json()["error"]
    assert "sent as application/x-www-form-urlencoded" in error
    assert "Content-Type: application/json" in error


@pytest.mark.parametrize("body,reason", [(b"\xc1", "it holds a byte that begins no MessagePack value"),
                                         (b"\x92\x01", "the body ends in the middle of a value"),
                                         (b"\x01\x02", "bytes follow the end of the first value")])
def test_a_bad_msgpack_body_says_why(echo, body, reason):
    answer = post(echo, body, "application/msgpack")
    assert answer.status == 400
    assert answer.json()["error"] == f"the request body is not valid MessagePack: {reason}"


def test_a_json_body_that_is_not_utf8_is_told_so(echo):
    answer = post(echo, b'{"a": "caf\xe9"}', "application/json")
    assert answer.status == 400
    assert answer.json()["error"] == ("the request body is not valid JSON: it is not UTF-8 text "
                                      "(byte 0xe9 at offset 10); JSON must be sent as UTF-8")


def test_413_names_the_flag(echo):
    answer = post(echo, b"x" * 1001, "application/json")
    assert answer.status == 413
    assert answer.json()["error"] == ("request body of 1001 bytes is over --max-body-size "
                                      "(1000 bytes)")


# -- 3. every answer has an access line; refusals say why ------------------------------------------

def raw_answer(server, data):
    with Connection(server.host, server.port) as conn:
        conn.send(data)
        return conn.read_response()


REFUSALS = [
    (b"GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n", 404, "no route for /nowhere"),
    (b"PUT /healthz HTTP/1.1\r\nHost: h\r\n\r\n", 405, "method PUT is not allowed on /healthz"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n",
     413, "over --max-body-size (1000 bytes)"),
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "request line too long"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(12)) + b"\r\n",
     431, "too many header fields"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400, "exactly one Host"),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n{x}",
     400, "not valid JSON"),
]


limited = module_server("limited", ECHO,
                        "--max-body-size", "1000", "--max-target", "200", "--max-headers", "10",
                        "--head-timeout", "1")


@pytest.mark.parametrize("data,status,reason", REFUSALS,
                         ids=[str(status) + "-" + reason[:12] for _, status, reason in REFUSALS])
def test_refusals_have_an_access_line_with_their_reason(limited, data, status, reason):
    mark = len(limited.lines)
    answer = raw_answer(limited, data)
    assert answer.status == status
    line = wait_for_new(limited, mark, rf"INFO lite_serving\.access\[\d+\]: 127\.0\.0\.1:\d+ - "
                                       rf"\".*\" {status} .* -- .*{re.escape(reason)}")
    assert answer.json()["error"] in line


def test_a_request_that_times_out_has_an_access_line(limited):
    mark = len(limited.lines)
    with Connection(limited.host, limited.port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: h\r\n")  # the head never ends: 408 after --head-timeout
        assert conn.read_response().status == 408
    wait_for_new(limited, mark, r"lite_serving\.access.* 408 .* -- timed out waiting for the request")


# -- 4. request ids --------------------------------------------------------------------------------

EVENTS = """
    import openbayes_serving as serv

    class Predictor:
        def predict(self, data):
            serv.emit_event("seen", data)
            return {"ok": True}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_request_ids_are_echoed_logged_and_made_when_absent(tmp_path):
    server = start(tmp_path / "m", EVENTS)
    try:
        mark = len(server.lines)
        answer = post(server, b"one", "text/plain", headers={"X-Request-Id": "client-id-1"})
        assert answer.status == 200 and answer.header("x-request-id") == "client-id-1"
        wait_for_new(server, mark, r"lite_serving\.access.*\"POST / HTTP/1\.1\" 200 .* client-id-1 ")
        wait_for_new(server, mark, r"event seen of request client-id-1 ->")

        answer = post(server, b"two", "text/plain", headers={"X-Openbayes-Serving-Request-Id": "77"})
        assert answer.header("x-request-id") == "77"

        mark = len(server.lines)
        answer = post(server, b"three", "text/plain")
        made = answer.header("x-request-id")
        assert made and re.fullmatch(r"[0-9a-f]{20,}", made)
        wait_for_new(server, mark, rf"event seen of request {made} ->")
        wait_for_new(server, mark, rf"lite_serving\.access.* 200 .* {made} ")
        other = request(server, "GET", "/nowhere").header("x-request-id")
        assert other and other != made  # every answer has one, each its own
    finally:
        kill(server)


# -- 5. structured logs ----------------------------------------------------------------------------

FAILING = """
    import openbayes_serving as serv

    class Predictor:
        def predict(self, json):
            return {"label": json["label"]}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


@pytest.mark.parametrize("how", ["flag", "env"])
def test_json_logs_are_one_object_a_line(tmp_path, how):
    flags, env = (["--log-format", "json"], None) if how == "flag" else \
        ([], {"LITE_SERVING_LOG_FORMAT": "json"})
    server = start(tmp_path / "m", FAILING, *flags, env=env)
    try:
        assert post_json(server, {"label": 1}, headers={"User-Agent": "probe/1",
                                                          "X-Request-Id": "rid-7"}).status == 200
        assert post_json(server, {}).status == 500   # a traceback, as a field
        assert request(server, "GET", "/nowhere").status == 404
        wait_for_new(server, 0, r'"status":\s*404')
        server.stop()
        objects = [json.loads(line) for line in server.lines]  # every line is one object
        for obj in objects:
            assert {"time", "level", "logger", "message"} <= set(obj), obj
        assert any(o["message"].startswith("ready in") for o in objects)
        access = [o for o in objects if o["logger"] == "lite_serving.access"]
        ok = next(o for o in access if o["request_id"] == "rid-7")
        assert ok["method"] == "POST" and ok["path"] == "/" and ok["status"] == 200
        assert ok["user_agent"] == "probe/1" and ok["bytes_in"] == len(b'{"label": 1}')
        assert ok["bytes_out"] > 0 and ok["duration_ms"] >= 0
        assert re.fullmatch(r"127\.0\.0\.1:\d+", ok["client"])
        missing = next(o for o in access if o["status"] == 404)
        assert missing["reason"].startswith("no route for /nowhere")
        failed = next(o for o in objects if o["level"] == "ERROR")
        assert "KeyError: 'label'" in failed["traceback"]
        assert "Traceback (most recent call last)" in failed["traceback"]
        assert "Traceback" not in failed["message"]
    finally:
        kill(server)


# the application's own handler on the access logger, its format naming the access line's fields
APP_FORMAT = APP_LOGGING.replace(
    '"APP-FORMAT %(name)s %(message)s"',
    '"APP %(status)s %(method)s %(path)s %(request_id)s %(bytes_out)s %(user_agent)s"')


def test_access_fields_reach_the_applications_formatter(tmp_path):
    server = start(tmp_path / "m", APP_FORMAT)
    try:
        mark = len(server.lines)
        post_json(server, [1], headers={"X-Request-Id": "app-rid", "User-Agent": "ua/2"})
        wait_for_new(server, mark, r"^APP 200 POST / app-rid \d+ ua/2$")
    finally:
        kill(server)


# -- 7. CORS ---------------------------------------------------------------------------------------

def cors_of(server, origin):
    answer = request(server, "GET", "/", headers={"Origin": origin})
    return (answer.header("access-control-allow-origin"),
            answer.header("access-control-allow-credentials"))


def test_cors_default_reflects_every_origin_with_credentials(echo):
    assert cors_of(echo, "https://anyone.example") == ("https://anyone.example", "true")


def test_cors_allowed_origins_only(tmp_path):
    server = start(tmp_path / "m", ECHO, "--cors-allow-origins",
                   "https://app.example,https://admin.example")
    try:
        assert cors_of(server, "https://app.example") == ("https://app.example", "true")
        assert cors_of(server, "https://admin.example") == ("https://admin.example", "true")
        assert cors_of(server, "https://evil.example") == (None, None)
        preflight = request(server, "OPTIONS", "/", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert preflight.header("access-control-allow-methods") is None
    finally:
        kill(server)


def test_cors_any_origin_is_never_with_credentials(tmp_path):
    server = start(tmp_path / "m", ECHO, env={"LITE_SERVING_CORS_ALLOW_ORIGINS": "*"})
    try:
        assert cors_of(server, "https://anyone.example") == ("*", None)
    finally:
        kill(server)


# -- 6. one /metrics for all workers ---------------------------------------------------------------

PID = """
    import os
    import openbayes_serving as serv

    class Predictor:
        def predict(self, json):
            return {"pid": os.getpid()}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def answered(server):
    """The server's 2xx count and its per-worker request counts, from one scrape."""
    from support.wire import fetch_metrics
    metrics = fetch_metrics(server)
    return (metrics.value("lite_serving_requests_total", code="2xx"),
            {ls["worker"]: v for ls, v in metrics.series("lite_serving_worker_requests_total")})


def test_metrics_report_every_worker_and_survive_a_replaced_worker(serve):
    import signal as signals

    from support.waits import wait_until
    server = serve(PID, "--workers", "2")
    wait_until(lambda: len(re.findall(r"ready in \d+ ms", server.log)) == 2, what="both workers")
    pids = set()
    for _ in range(60):  # fresh connections: the kernel spreads them over the workers
        pids.add(post_json(server, {}).json()["pid"])
    assert len(pids) == 2
    # whichever worker answers the scrape, it reports the whole server (a worker's figures
    # reach the others within a second)
    total, per_worker = wait_until(lambda: (lambda got: got[0] >= 60 and got)(answered(server)),
                                   what="the 60 answers of both workers in one scrape")
    assert set(per_worker) == {"0", "1"} and all(n > 0 for n in per_worker.values()), per_worker
    os.kill(pids.pop(), signals.SIGKILL)   # its replacement takes its slot and its counts
    wait_until(lambda: len(re.findall(r"ready in \d+ ms", server.log)) == 3, what="a new worker")
    for _ in range(10):
        now, _ = answered(server)
        assert now >= total, "a server's counter went back when a worker was replaced"


# -- 10. start-up lines in plain words ---------------------------------------------------------------

def test_start_up_lines_are_short_and_the_internals_at_debug_level(tmp_path):
    server = start(tmp_path / "m", ECHO, "--dev")
    try:
        ready_at = next(i for i, line in enumerate(server.lines) if "ready in" in line)
        start_up = [line.rstrip("\n").partition("]: ")[2] for line in server.lines[:ready_at + 1]]
        assert all(len(line) <= 160 for line in start_up), start_up
        assert start_up[0].startswith("lite_serving ") and str(server.directory) in start_up[0]
        assert any("development mode (--dev)" in line for line in start_up)
        assert f"answers POST http://127.0.0.1:{server.port}/" in start_up[-1]
        assert not any(word in server.log for word in ("parser:", "tensor codec", "json_c"))
    finally:
        kill(server)
    server = start(tmp_path / "d", ECHO, "--log-level", "debug")
    try:
        server.wait_for(r"DEBUG lite_serving\[\d+\]: parser: .*tensor codec: .*JSON: ")
        server.wait_for(r"DEBUG lite_serving\[\d+\]: how predict runs: predict runs on the I/O thread")
    finally:
        kill(server)
