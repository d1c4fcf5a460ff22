"""Start-up: address and port, the onnx argument, run(), entry points, start-up errors, logs."""

import importlib.machinery
import os
import re
import site
import socket
import sys

import pytest

from support.http_client import post_json, request
from support.predictors import APP_LOGGING, raising_in
from support.servers import (
    ECHO,
    kill,
    launch,
    ready,
    run_to_exit,
    serve_to_exit,
    spawn,
    start,
    wait_for_new,
    write_predictor,
)

LOCAL = ("--host", "127.0.0.1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_echoes(server):
    resp = post_json(server, {"ping": [1, "x"]})
    assert resp.status == 200 and resp.json() == {"ping": [1, "x"]}


def assert_one_clear_line(code, output, *words):
    """Start-up failed: non-zero status, a line naming every word, no traceback."""
    assert code != 0, output
    assert "Traceback" not in output, output
    assert any(all(w in line for w in words) for line in output.splitlines()), output


def write(directory, source, files=None):
    return write_predictor(directory, source, files)


# -- address and port -----------------------------------------------------------

def test_host_and_port_flags(tmp_path):
    port = free_port()
    srv = start(tmp_path / "m", ECHO, "--host", "127.0.0.1", "--port", str(port))
    try:
        assert (srv.host, srv.port) == ("127.0.0.1", port)
        assert_echoes(srv)
    finally:
        kill(srv)


def test_port_from_environment(tmp_path):
    port = free_port()
    srv = launch(write(tmp_path / "m", ECHO), *LOCAL, env={"OPENBAYES_SERVING_PORT": str(port)})
    try:
        ready(srv)
        assert srv.port == port
        assert_echoes(srv)
    finally:
        kill(srv)


def test_port_flag_beats_environment(tmp_path):
    env_port, flag_port = free_port(), free_port()
    srv = launch(write(tmp_path / "m", ECHO), *LOCAL, "--port", str(flag_port),
                 env={"OPENBAYES_SERVING_PORT": str(env_port)})
    try:
        ready(srv)
        assert srv.port == flag_port
        assert_echoes(srv)
    finally:
        kill(srv)


@pytest.mark.parametrize("env,port", [
    ({}, 25252),
    ({"OPENBAYES_JOB_URL": "http://job.example/"}, 8080),
    ({"OPENBAYES_SERVING_PRODUCTION": "1"}, 80),
    ({"OPENBAYES_JOB_URL": "http://job.example/", "OPENBAYES_SERVING_PRODUCTION": "1"}, 8080),
    ({"OPENBAYES_SERVING_PORT": "4321"}, 4321),
    # openbayes-serving's order: the platform's port wins over OPENBAYES_SERVING_PORT
    ({"OPENBAYES_SERVING_PORT": "4321", "OPENBAYES_JOB_URL": "http://job.example/"}, 8080),
    ({"OPENBAYES_SERVING_PORT": "25470", "OPENBAYES_SERVING_PRODUCTION": "1"}, 80),
    ({"OPENBAYES_SERVING_PORT": "4321", "OPENBAYES_JOB_URL": "http://job.example/",
      "OPENBAYES_SERVING_PRODUCTION": "1"}, 8080),
    ({"OPENBAYES_SERVING_PORT": ""}, 25252),
])
def test_default_port_precedence(monkeypatch, env, port):
    from lite_serving.process import config
    for name in ("OPENBAYES_SERVING_PORT", "OPENBAYES_JOB_URL", "OPENBAYES_SERVING_PRODUCTION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert config.default_port() == port
    assert config.parse_config([]).port == port
    assert config.parse_config(["--port", "1234"]).port == 1234


def ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_host(tmp_path):
    srv = start(tmp_path / "m", ECHO, "--host", "::1")
    try:
        assert srv.host == "::1"
        assert "http://[::1]:" in srv.log
        resp = request("::1", "POST", "/", [("Content-Type", "application/json")], b"[6]",
                       port=srv.port)
        assert resp.status == 200 and resp.json() == [6]
    finally:
        kill(srv)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_two_servers_share_a_port_only_when_both_ask(serve):
    port = free_port()
    first = serve(ECHO, "--port", str(port), "--reuse-port")
    second = serve(ECHO, "--port", str(port), "--reuse-port")
    assert first.port == second.port == port
    assert first.proc.poll() is None and second.proc.poll() is None
    for _ in range(4):
        assert_echoes(first)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_a_second_server_on_a_port_in_use_fails(serve, workers):
    """A port in use is an error, whatever the first server is: no silent sharing of its traffic."""
    port = free_port()
    first = serve(ECHO, "--port", str(port), *workers)
    second = serve(ECHO, "--port", str(port), wait=False)
    assert second.proc.wait(20) == 1
    second.wait_for(rf"cannot listen on .*:{port}: Address already in use")
    for _ in range(4):
        assert_echoes(first)


# -- the onnx argument ------------------------------------------------------------

def make_model(path, addend):
    """A tiny ONNX model: Y = X + addend (float32 vectors)."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None])
    const = numpy_helper.from_array(np.array([addend], dtype=np.float32), "addend")
    graph = helper.make_graph([helper.make_node("Add", ["X", "addend"], ["Y"])], "add",
                              [x], [y], [const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


ONNX_SOURCE = """
    import numpy as np

    import openbayes_serving as serv


    class OnnxAdder:
        def __init__(self, onnx):
            self.session = onnx

        def predict(self, json, params, headers):
            x = np.array(json["x"], dtype=np.float32)
            y = self.session.run(None, {"X": x})[0]
            kind = type(self.session)
            return {"y": y.tolist(), "type": kind.__name__, "module": kind.__module__}


    if __name__ == "__main__":
        serv.run(OnnxAdder)
"""


@pytest.fixture
def onnx_ready():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")


def assert_adds(server, addend):
    resp = post_json(server, {"x": [1.0, 2.5]})
    assert resp.status == 200, resp
    got = resp.json()
    assert got["y"] == [1.0 + addend, 2.5 + addend]
    assert got["type"] == "InferenceSession" and got["module"].startswith("onnxruntime")


def test_onnx_model_in_the_model_directory(tmp_path, onnx_ready):
    directory = tmp_path / "m"
    make_model(directory / "model.onnx", 1.0)
    srv = start(directory, ONNX_SOURCE, "--log-level", "debug")
    try:
        assert_adds(srv, 1.0)
        # the start-up block names the class, what __init__ and predict get, address (the
        # parser at debug level)
        log = srv.log
        assert "OnnxAdder" in log
        assert any("__init__" in line and "onnx" in line for line in srv.lines), log
        assert any("predict" in line and "json" in line and "params" in line and "headers" in line
                   for line in srv.lines), log
        parser = re.search(r"parser: (compiled|pure Python)", log)
        assert parser, log
        if os.environ.get("LITE_SERVING_PURE", "") not in ("", "0"):
            assert parser.group(1) == "pure Python", log
        elif os.environ.get("LITE_SERVING_REQUIRE_COMPILED", "") not in ("", "0"):
            assert parser.group(1) == "compiled", log
        assert f"listening on http://127.0.0.1:{srv.port}" in log
    finally:
        kill(srv)


def test_onnx_model_path_directory(tmp_path, onnx_ready):
    make_model(tmp_path / "models" / "adder.onnx", 2.0)
    srv = start(tmp_path / "m", ONNX_SOURCE, "--model-path", str(tmp_path / "models"))
    try:
        assert_adds(srv, 2.0)
    finally:
        kill(srv)


def test_onnx_model_path_file(tmp_path, onnx_ready):
    directory = tmp_path / "m"
    make_model(directory / "a.onnx", 1.0)
    make_model(directory / "b.onnx", 3.0)
    srv = start(directory, ONNX_SOURCE, "--model-path", str(directory / "b.onnx"))
    try:
        assert_adds(srv, 3.0)
    finally:
        kill(srv)


def test_onnx_without_a_model_fails_clearly(tmp_path, onnx_ready):
    code, output = serve_to_exit(tmp_path / "m", ONNX_SOURCE)
    assert_one_clear_line(code, output, ".onnx")


def test_onnx_with_several_models_fails_clearly(tmp_path, onnx_ready):
    directory = tmp_path / "m"
    make_model(directory / "first.onnx", 1.0)
    make_model(directory / "second.onnx", 2.0)
    code, output = serve_to_exit(directory, ONNX_SOURCE)
    assert_one_clear_line(code, output, "first.onnx", "second.onnx")


# -- start-up errors ------------------------------------------------------------------

def test_class_without_predict_fails_clearly(tmp_path):
    source = """
        import openbayes_serving as serv


        class NoPredict:
            def __init__(self):
                pass


        if __name__ == "__main__":
            serv.run(NoPredict)
    """
    code, output = serve_to_exit(tmp_path / "m", source)
    assert_one_clear_line(code, output, "predict")


@pytest.mark.parametrize("init, predict, named", [
    ("self, tokenizer_thing", "self, json", "tokenizer_thing"),
    ("self", "self, json, banana_arg", "banana_arg"),
    ("self", 'self, body: "jsonish"', "body"),
], ids=["init_parameter", "predict_parameter", "annotated_predict_parameter"])
def test_unknown_parameter_fails_clearly(tmp_path, init, predict, named):
    source = f"""
        import openbayes_serving as serv


        class Predictor:
            def __init__({init}):
                pass

            def predict({predict}):
                return None


        if __name__ == "__main__":
            serv.run(Predictor)
    """
    code, output = serve_to_exit(tmp_path / "m", source)
    assert_one_clear_line(code, output, named)


# -- run() ---------------------------------------------------------------------------

RUN_SOURCE = """
    import threading

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            self.seen = None
            self.built = True

        def run(self):
            thread = threading.current_thread()
            with open("run-marker.txt", "w") as f:
                f.write("ran")
            self.seen = {"built_before_run": getattr(self, "built", False),
                         "daemon": thread.daemon,
                         "main_thread": thread is threading.main_thread()}

        def predict(self, json):
            return {"seen": self.seen}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_run_is_called_in_a_daemon_thread_after_init(tmp_path):
    directory = tmp_path / "m"
    srv = start(directory, RUN_SOURCE)
    try:
        seen = None
        for _ in range(500):
            seen = post_json(srv, {}).json()["seen"]
            if seen is not None:
                break
        assert seen == {"built_before_run": True, "daemon": True, "main_thread": False}
        assert (directory / "run-marker.txt").read_text() == "ran"
    finally:
        kill(srv)


RAISING_RUN = raising_in("run", "run-failed-distinctly")


def test_run_exception_in_production_ends_the_process_with_status_1(tmp_path):
    code, output = serve_to_exit(tmp_path / "m", RAISING_RUN, "--port", "0", "--host", "127.0.0.1",
                                 env={"OPENBAYES_SERVING_PRODUCTION": "1"})
    assert code == 1, output
    assert "run-failed-distinctly" in output


def test_run_exception_outside_production_is_logged_and_serving_goes_on(tmp_path):
    srv = start(tmp_path / "m", RAISING_RUN)
    try:
        srv.wait_for(r"RuntimeError: run-failed-distinctly")
        assert_echoes(srv)
        assert srv.proc.poll() is None
    finally:
        kill(srv)


# -- entry points -----------------------------------------------------------------------

def test_model_directory_becomes_the_working_directory(tmp_path):
    source = """
        import os

        import openbayes_serving as serv


        class Predictor:
            def __init__(self):
                with open("labels.txt") as f:
                    self.labels = f.read().split()

            def predict(self, json):
                with open("data/extra.txt") as f:
                    extra = f.read()
                return {"labels": self.labels, "extra": extra, "cwd": os.getcwd()}


        if __name__ == "__main__":
            serv.run(Predictor)
    """
    directory = write(tmp_path / "model", source, {"labels.txt": "cat dog"})
    (directory / "data").mkdir()
    (directory / "data" / "extra.txt").write_text("more")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    srv = launch(directory, *LOCAL, "--port", "0", cwd=elsewhere)
    try:
        ready(srv)
        got = post_json(srv, {}).json()
        assert got["labels"] == ["cat", "dog"] and got["extra"] == "more"
        assert os.path.realpath(got["cwd"]) == os.path.realpath(directory)
    finally:
        kill(srv)


def test_predictor_that_never_calls_run_is_served(tmp_path):
    source = """
        class OnlyAClass:
            def __init__(self):
                self.tag = "built"

            def predict(self, json):
                return {"tag": self.tag, "in": json}
    """
    srv = start(tmp_path / "m", source)
    try:
        assert post_json(srv, [1]).json() == {"tag": "built", "in": [1]}
    finally:
        kill(srv)


def test_start_sh_runs_with_bash_in_the_model_directory(tmp_path):
    directory = write(tmp_path / "m", ECHO, {"start.sh": (
        'pwd > started-in.txt\n'
        'echo "bash=$BASH_VERSION" >> started-in.txt\n'
        'exit 7\n')})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, output = run_to_exit(["-m", "lite_serving", str(directory)], elsewhere)
    assert code == 7, output
    lines = (directory / "started-in.txt").read_text().splitlines()
    assert os.path.realpath(lines[0]) == os.path.realpath(directory)
    assert re.fullmatch(r"bash=\d.*", lines[1]), lines


def test_start_sh_can_serve_http_itself(tmp_path):
    directory = write(tmp_path / "m", ECHO, {
        "start.sh": f'exec "{sys.executable}" custom_server.py\n',
        "custom_server.py": (
            "import http.server, sys\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        body = b'custom'\n"
            "        self.send_response(200)\n"
            "        self.send_header('Content-Length', str(len(body)))\n"
            "        self.end_headers()\n"
            "        self.wfile.write(body)\n"
            "srv = http.server.HTTPServer(('127.0.0.1', 0), H)\n"
            "sys.stderr.write('custom listening on http://127.0.0.1:%d/\\n' % srv.server_port)\n"
            "sys.stderr.flush()\n"
            "srv.serve_forever()\n"),
    })
    srv = spawn(["-m", "lite_serving", str(directory)], directory)
    try:
        port = int(srv.wait_for(r"custom listening on http://127.0.0.1:(\d+)").group(1))
        resp = request("127.0.0.1", "GET", "/", port=port)
        assert resp.status == 200 and resp.body == b"custom"
    finally:
        kill(srv)


def real_openbayes_serving_installed():
    """The openbayes-serving package itself, not lite_serving's import alias for it."""
    return importlib.machinery.PathFinder.find_spec("openbayes_serving") is not None


ALIAS_SOURCE = """
    import lite_serving
    import lite_serving.common
    import openbayes_serving as serv
    from openbayes_serving.common import ServingError


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            return {"same": serv is lite_serving,
                    "common": ServingError is lite_serving.common.ServingError}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


@pytest.mark.skipif(real_openbayes_serving_installed(), reason="the real openbayes_serving is installed")
def test_import_openbayes_serving_resolves_to_lite_serving(tmp_path):
    srv = start(tmp_path / "m", ALIAS_SOURCE)
    try:
        assert post_json(srv, {}).json() == {"same": True, "common": True}
    finally:
        kill(srv)


def test_python_predictor_py_with_lite_serving(tmp_path):
    source = """
        import lite_serving as serv


        class Predictor:
            def __init__(self):
                pass

            def predict(self, json):
                return {"direct": json}


        if __name__ == "__main__":
            serv.run(Predictor)
    """
    directory = write(tmp_path / "m", source)
    srv = spawn(["predictor.py", *LOCAL, "--port", "0"], directory)
    try:
        ready(srv)
        assert post_json(srv, 5).json() == {"direct": 5}
    finally:
        kill(srv)


def alias_pth_installed():
    dirs = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return any(os.path.isfile(os.path.join(d, "lite_serving_alias.pth")) for d in dirs)


@pytest.mark.skipif(not alias_pth_installed(), reason="lite_serving_alias.pth is not installed")
@pytest.mark.skipif(real_openbayes_serving_installed(), reason="the real openbayes_serving is installed")
@pytest.mark.parametrize("env", [{}, {"LITE_SERVING_ALIAS": "1"}], ids=["no-variable", "variable"])
def test_python_predictor_py_with_openbayes_serving_alias(tmp_path, env):
    directory = write(tmp_path / "m", ALIAS_SOURCE)
    srv = spawn(["predictor.py", *LOCAL, "--port", "0"], directory, env=env)
    try:
        ready(srv)
        assert post_json(srv, {}).json() == {"same": True, "common": True}
    finally:
        kill(srv)


# -- logs -------------------------------------------------------------------------------

def access_requests(server):
    assert request(server, "GET", "/").status == 200
    assert post_json(server, {"a": 1}, target="/?tag=zz").status == 200
    assert request(server, "GET", "/nowhere-xyz").status == 404


ACCESS = [("GET", "/", 200), ("POST", "/?tag=zz", 200), ("GET", "/nowhere-xyz", 404)]


@pytest.mark.parametrize("flags", [(), ("--access-log",)], ids=["default", "flag"])
def test_access_log_has_one_line_per_request(tmp_path, flags):
    srv = start(tmp_path / "m", ECHO, *flags)
    try:
        mark = len(srv.lines)
        access_requests(srv)
        for method, target, status in ACCESS:
            pattern = (rf"\b{method} {re.escape(target)}(?=[\s\"]).*\b{status}\b"
                       rf".*\d+(\.\d+)?\s*(ms|s)\b")
            wait_for_new(srv, mark, pattern)
            matching = [line for line in srv.lines[mark:] if re.search(pattern, line)]
            assert len(matching) == 1, srv.lines[mark:]
            assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO lite_serving.access\[\d+\]: "
                            r"127\.0\.0\.1:\d+ - ", matching[0]), matching[0]
    finally:
        kill(srv)


def test_access_log_goes_through_the_applications_logging(tmp_path):
    srv = start(tmp_path / "m", APP_LOGGING)
    try:
        mark = len(srv.lines)
        access_requests(srv)
        wait_for_new(srv, mark, r"^APP-FORMAT lite_serving\.access .*\"GET /nowhere-xyz HTTP/1\.1\" 404")
    finally:
        kill(srv)


def test_no_access_log_asked(tmp_path):
    srv = start(tmp_path / "m", ECHO, "--no-access-log")
    try:
        access_requests(srv)
        assert srv.proc.poll() is None
        srv.stop()  # the whole log, up to the end
        assert "nowhere-xyz" not in srv.log
        assert "tag=zz" not in srv.log
        assert not re.search(r"\"(GET|POST) /", srv.log)
    finally:
        kill(srv)
