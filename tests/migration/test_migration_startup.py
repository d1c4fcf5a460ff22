"""Moving from openbayes-serving: start-up and readiness, the order of the log, the port,
--help, predictors written for older versions, the predictor template.

Every server here is a real process on a real socket.
"""

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

from support.http_client import post_json, request
from support.predictors import BOUND, GATED
from support.servers import (
    LISTENING,
    clean_env,
    connection_refused,
    free_port,
    ready,
    run_to_exit,
    serve_to_exit,
    spawn,
    start,
    stop,
    write_predictor,
)
from support.waits import wait_until
from support.wire import Client, build


def bound_port(server):
    m = server.wait_for(BOUND)
    return int(m.group(3))


@pytest.fixture
def gated(tmp_path):
    """``spawn(*flags, released=False, log_stdout=True)`` → (server, gate file): __init__ waits for the gate.

    ``released``: the gate is open from the start, and the server is returned once ready.
    Every server is stopped at the end of the test.
    """
    started = []

    def start_gated(*flags, released=False, env=None):
        directory = write_predictor(tmp_path / f"m{len(started)}", GATED)
        gate = directory / "release-init"
        if released:
            gate.write_text("")
        server = start(directory, None, *flags, env={"TEST_INIT_GATE": str(gate), **(env or {})}, wait=False, log_stdout=True)
        started.append(server)
        return (ready(server) if released else server), gate

    yield start_gated
    for server in started:
        stop(server)


def log_index(server, pattern):
    """Index of the first log line matching ``pattern`` (-1 if none)."""
    regex = re.compile(pattern)
    return next((i for i, line in enumerate(server.lines) if regex.search(line)), -1)


# -- 1. readiness: the port refuses connections until the predictor is built -----------

def test_port_refuses_connections_until_the_predictor_is_built(gated):
    server, gate = gated()
    port = bound_port(server)
    server.wait_for("INIT-START")
    # a TCP probe and GET / are refused while __init__ runs (as the reference does)
    for _ in range(5):
        assert connection_refused(port)
    assert not any(LISTENING.search(line) for line in server.lines), server.log
    gate.write_text("")
    ready(server)
    assert server.port == port
    root = request(server, "GET", "/")
    assert root.status == 200, root
    answer = post_json(server, {"x": 1})
    assert answer.status == 200 and answer.json()["echo"] == {"x": 1}
    assert request(server, "GET", "/readyz").status == 200


def test_port_conflict_fails_before_the_predictor_is_built(tmp_path):
    taken = socket.socket()  # no SO_REUSEPORT: nobody may share this port
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        code, output = serve_to_exit(tmp_path / "m", GATED, "--port", str(port),
                                     env={"TEST_INIT_GATE": str(tmp_path / "never")}, timeout=60)
        assert code == 1, output
        assert f"cannot listen on 127.0.0.1:{port}" in output and "--port" in output, output
        assert "INIT-START" not in output, output  # the model never started loading
        assert "Traceback" not in output, output
    finally:
        taken.close()


def test_every_worker_listens_only_once_its_predictor_is_built(gated):
    port = free_port()
    server, gate = gated("--workers", "2", "--port", str(port))
    wait_until(lambda: server.log.count("INIT-START") == 2, what="both workers building")
    for _ in range(5):
        assert connection_refused(port)
    gate.write_text("")
    wait_until(lambda: len(re.findall(r"ready in \d+ ms", server.log)) == 2,
               what="both workers ready")
    server.port = port
    pids = set()
    for _ in range(200):
        pids.add(post_json(server, {}).json()["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2, "both workers answer once built"
    assert server.stop(signal.SIGTERM, timeout=30) == 0, server.log


def test_get_root_answers_503_while_draining(gated, tmp_path):
    server, _ = gated(released=True)
    release = tmp_path / "release-predict"
    busy = Client(server)
    busy.send(build("POST", "/", [("Content-Type", "application/json")],
                    b'{"gate": "%s"}' % str(release).encode()))
    server.wait_for("PREDICT-START")
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for("shutting down")
    busy.send(build("GET", "/"))           # asked while draining, behind the predict
    release.write_text("")
    assert busy.read().status == 200
    root = busy.read()
    assert root.status == 503, root
    assert b"shutting down" in root.body
    busy.close()
    server.proc.wait(30)
    assert server.proc.returncode == 0, server.log


# -- 2. the log says what happens, in the order it happens ----------------------------

def test_start_up_lines_come_in_the_order_things_happen(gated):
    server, _ = gated(released=True)
    order = [log_index(server, p) for p in (
        r"lite_serving \S+ on Python", r"building Predictor \(predictor\.py\)", "INIT-START",
        r"__init__ got: nothing", r"predict gets: json", r"listening on http://127\.0\.0\.1:\d+",
        r"ready in \d+ ms")]
    assert -1 not in order and order == sorted(order), server.log
    ready_line = server.lines[order[-1]]
    # in plain words: what is served, where, and how predict is run
    assert "Predictor (predictor.py)" in ready_line
    assert f"POST http://127.0.0.1:{server.port}/" in ready_line
    assert "predict runs on the I/O thread" in ready_line


@pytest.mark.parametrize("flags", [(), ("--listen-early",)], ids=["default", "listen-early"])
def test_a_failed_build_exits_at_once_without_shutdown_lines(tmp_path, flags):
    code, output = serve_to_exit(tmp_path / "m", GATED, *flags, env={"TEST_INIT_FAIL": "1"})
    assert code == 1, output
    assert "model-load-failed-distinctly" in output
    assert "could not be built" in output
    assert "waiting up to" not in output and "shutting down" not in output, output
    assert "ready in" not in output
    if not flags:
        assert "listening on" not in output, output


def test_sigterm_while_building_stops_at_once(gated):
    server, _gate = gated()
    server.wait_for("INIT-START")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0, server.log
    server.wait_for("stopped before the predictor was ready")
    assert "waiting up to" not in server.log and "listening on" not in server.log, server.log


APP_LOGGING = """
    import logging

    import openbayes_serving as serv

    logging.basicConfig(format="APP-LOG %(name)s %(levelname)s %(message)s")


    class Predictor:
        def predict(self, json):
            return json


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_an_applications_logging_configuration_gets_the_start_up_lines(tmp_path):
    directory = write_predictor(tmp_path / "m", APP_LOGGING)
    server = ready(start(directory, None, wait=False, log_stdout=True))
    try:
        assert any(line.startswith("APP-LOG lite_serving INFO ready in ") for line in server.lines), server.log
        assert any(line.startswith("APP-LOG lite_serving INFO building Predictor") for line in server.lines)
        assert "lite_serving[" not in server.log  # lite_serving's own format is not used
    finally:
        stop(server)


# -- 6. the port, decided as openbayes-serving decides it ------------------------------

def test_production_port_wins_over_openbayes_serving_port(tmp_path):
    """OPENBAYES_SERVING_PRODUCTION=1 OPENBAYES_SERVING_PORT=P binds 80, as the reference does
    (or fails to bind 80, where that is not allowed): never P."""
    port = free_port()
    directory = write_predictor(tmp_path / "m", GATED)
    env = {"OPENBAYES_SERVING_PRODUCTION": "1", "OPENBAYES_SERVING_PORT": str(port),
           "TEST_INIT_GATE": str(tmp_path / "never")}
    server = spawn(["-m", "lite_serving", str(directory), "--host", "127.0.0.1"], directory, env, log_stdout=True)
    try:
        m = server.wait_for(r"(127\.0\.0\.1:80 is bound|cannot listen on 127\.0\.0\.1:80\b)")
        assert m
        assert f":{port}" not in server.log
    finally:
        stop(server)


# -- 9. --help and a missing directory ----------------------------------------------------

def test_help_lists_every_flag_with_its_default_and_variable(tmp_path):
    from lite_serving.process.config import SETTINGS
    outputs = [run_to_exit(["-m", "lite_serving", "--help"], tmp_path),
               run_to_exit(["-m", "lite_serving", str(tmp_path), "--help"], tmp_path)]
    for code, output in outputs:
        assert code == 0, output
        text = " ".join(output.split())  # argparse wraps lines
        assert "DIR" in text
        for s in SETTINGS:
            assert s.flag in text, s.flag
            assert s.env in text, s.env
        assert text.count("(default:") >= len(SETTINGS), output
    code, output = run_to_exit(["-m", "lite_serving", "--help"], tmp_path)
    assert "LITE_SERVING_THREADS)" in " ".join(output.split())


def test_python_predictor_py_help_lists_the_flags(tmp_path):
    directory = write_predictor(tmp_path / "m", GATED)
    code, output = run_to_exit(["predictor.py", "--help"], directory)
    assert code == 0, output
    text = " ".join(output.split())
    assert "--threads" in text and "LITE_SERVING_THREADS" in text and "(default: 10;" in text


def test_flags_without_a_directory_say_the_directory_is_missing(tmp_path):
    code, output = run_to_exit(["-m", "lite_serving", "--port", "8080"], tmp_path)
    assert code == 2, output
    assert "directory is missing" in output, output
    assert "'8080'" not in output and "not a model directory" not in output, output


def test_the_directory_may_come_after_the_flags(tmp_path):
    directory = write_predictor(tmp_path / "m", GATED)
    server = spawn(["-m", "lite_serving", "--port", "0", "--host", "127.0.0.1", str(directory)], directory, log_stdout=True)
    try:
        ready(server)
        assert post_json(server, [1]).json()["echo"] == [1]
    finally:
        stop(server)


def test_a_bad_environment_value_gets_a_clear_error(tmp_path):
    code, output = serve_to_exit(tmp_path / "m", GATED, env={"LITE_SERVING_THREADS": "many"})
    assert code == 2, output
    assert "LITE_SERVING_THREADS must be an integer, got 'many'" in output
    assert "Traceback" not in output


# -- 10. predictors written for older versions ---------------------------------------------

OLD_CONFIG = """
    import openbayes_serving as serv


    class Predictor:
        def __init__(self, config):
            config.limit_concurrency(2)

        def predict(self, json):
            return json


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_init_asking_for_config_names_the_replacement_in_one_line(tmp_path):
    code, output = serve_to_exit(tmp_path / "m", OLD_CONFIG)
    assert code == 1, output
    assert "Traceback" not in output, output
    line = next((text for text in output.splitlines() if "`config`" in text), "")
    assert "--threads" in line and "limit_concurrency" in line and "--help" in line, output
    assert "listening on" not in output


# -- 5. the predictor template: lite-serving init, serving ----------------------------------

def test_init_writes_a_template_that_serves(tmp_path):
    directory = tmp_path / "new"
    directory.mkdir()
    code, output = run_to_exit(["-m", "lite_serving", "init", str(directory)], tmp_path)
    assert code == 0, output
    source = (directory / "predictor.py").read_text()
    assert "import lite_serving as serv" in source and "serv.run(Predictor)" in source
    assert source.count("#") + source.count('"""') >= 4, "the template explains itself"
    server = start(directory, None, wait=False, log_stdout=True)
    try:
        ready(server)
        answer = post_json(server, {"values": [1, 2.5]})
        assert answer.status == 200 and answer.json() == {"doubled": [2, 5.0]}
        assert post_json(server, {"nothing": 1}).status == 400
    finally:
        stop(server)


def test_init_never_overwrites_without_force(tmp_path):
    target = tmp_path / "predictor.py"
    target.write_text("# my own predictor\n")
    code, output = run_to_exit(["-m", "lite_serving", "init", str(target)], tmp_path)
    assert code == 1, output
    assert "--force" in output
    assert target.read_text() == "# my own predictor\n"
    code, output = run_to_exit(["-m", "lite_serving", "init", str(target), "--force"], tmp_path)
    assert code == 0, output
    assert "serv.run(Predictor)" in target.read_text()


@pytest.mark.parametrize("answer,overwritten", [(b"y\n", True), (b"n\n", False)])
def test_init_asks_at_a_terminal(tmp_path, answer, overwritten):
    target = tmp_path / "predictor.py"
    target.write_text("# my own predictor\n")
    leader, follower = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "lite_serving", "init", str(target)],
                                cwd=tmp_path, env=clean_env(), stdin=follower, stdout=follower,
                                stderr=follower, start_new_session=True)
        os.close(follower)
        seen = b""
        while b"overwrite" not in seen:
            chunk = os.read(leader, 1024)
            assert chunk, seen
            seen += chunk
        os.write(leader, answer)
        assert proc.wait(30) == (0 if overwritten else 1)
    finally:
        os.close(leader)
    assert ("serv.run(Predictor)" in target.read_text()) == overwritten


def test_serving_command_writes_the_template_for_openbayes_serving_users(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "serving")
    if not os.path.exists(script):
        pytest.skip("the serving console script is not installed beside this interpreter")
    proc = subprocess.run([script], cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    source = (tmp_path / "predictor.py").read_text()
    assert "import openbayes_serving as serv" in source
    server = start(tmp_path, None, wait=False, log_stdout=True)
    try:
        ready(server)
        assert post_json(server, {"values": [3]}).json() == {"doubled": [6]}
    finally:
        stop(server)

