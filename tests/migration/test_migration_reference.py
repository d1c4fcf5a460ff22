"""The ``openbayes_serving`` name in fresh virtual environments, as users install things:

- ``lite-only``: ``pip install -e`` of this tree, nothing else (the editable install);
- ``both``: ``pip install`` of this tree and of openbayes-serving 0.5.0 from PyPI, as every
  example's requirements.txt does.

They need the package index: marked ``network`` (``pytest -m "not network"`` leaves them
out). Outside CI an install that fails skips them with pip's message; in CI (``CI`` set)
it fails them. Each environment is built once per test session.
"""

import os
import shutil
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest

from support.http_client import post_json
from support.servers import ready, spawn, stop

pytestmark = [pytest.mark.network, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SOURCE_FILES = ("lite_serving", "_speedups", "setup.py", "pyproject.toml", "README.md",
                "lite_serving_alias.py", "lite_serving_alias.pth")
REFERENCE = "openbayes-serving==0.5.0"

PREDICTOR = """
    import sys

    import openbayes_serving as serv
    from openbayes_serving.common import ServingError

    print("SERV-IS", serv.__name__, file=sys.stderr, flush=True)


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            if json.get("refuse"):
                raise ServingError("refused-distinctly", status_code=422)
            import lite_serving
            return {"lite": serv is lite_serving,
                    "one_error_class": ServingError is lite_serving.ServingError}


    if __name__ == "__main__":
        if "--only-import" in sys.argv:
            raise SystemExit(0)
        serv.run(Predictor)
"""


class Venv:
    """A virtual environment built for these tests; ``environ`` is what its processes get."""

    def __init__(self, path):
        self.path = path
        self.python = str(path / "bin" / "python")
        self.bin = path / "bin"
        self.environ = {k: v for k, v in os.environ.items()
                        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LITE_SERVING_ALIAS")
                        and not k.startswith("OPENBAYES_")}
        self.environ["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"

    def run(self, *args, cwd, env=None, timeout=120):
        """``python *args`` to its end: (return code, stdout + stderr)."""
        proc = subprocess.run([self.python, *args], cwd=cwd, env={**self.environ, **(env or {})},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
        return proc.returncode, proc.stdout + proc.stderr

    def pip_install(self, *args):
        env = {**self.environ, "LITE_SERVING_NO_EXT": "1"}  # the parser is tested elsewhere
        proc = subprocess.run([self.python, "-m", "pip", "install", "-q", *args], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            message = f"pip install {' '.join(args)} failed:\n{tail}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)

    def serve(self, args, cwd, env=None):
        return spawn(args, cwd, python=self.python, environ={**self.environ, **(env or {})}, log_stdout=True)


def copy_source(dest):
    """This tree's package sources, without build products, for pip to build from."""
    dest.mkdir(parents=True)
    for name in SOURCE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.so", "*.pyd", "*.c", "*.html"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def make_venv(path):
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return Venv(path)


@pytest.fixture(scope="session")
def lite_only(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv-lite-only")
    env = make_venv(root / "venv")
    env.pip_install("-e", str(copy_source(root / "src")))
    return env


@pytest.fixture(scope="session")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("venv-both")
    env = make_venv(root / "venv")
    env.pip_install(REFERENCE, str(copy_source(root / "src")))
    return env


@pytest.fixture
def model_dir(tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "predictor.py").write_text(textwrap.dedent(PREDICTOR))
    return directory


def serves_with_lite(server):
    ready(server)
    answer = post_json(server, {})
    assert answer.status == 200 and answer.json() == {"lite": True, "one_error_class": True}, answer
    refused = post_json(server, {"refuse": 1})
    assert refused.status == 422 and refused.json() == {"error": "refused-distinctly"}
    assert "SERV-IS lite_serving" in server.log


def startup_modules(env, environ=None):
    """Names of the modules an interpreter of ``env`` imports to run ``pass`` (-X importtime)."""
    code, output = env.run("-X", "importtime", "-c", "pass", cwd=env.path, env=environ)
    assert code == 0, output
    names = set()
    for line in output.splitlines():
        fields = line.split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[1].strip().isdigit():
            names.add(fields[2].strip())
    assert "site" in names, output
    return names


# -- lite_serving alone (editable install) ----------------------------------------------------

def test_python_predictor_py_with_openbayes_serving_import_and_no_variable(lite_only, model_dir):
    server = lite_only.serve(["predictor.py", "--host", "127.0.0.1", "--port", "0"], model_dir)
    try:
        serves_with_lite(server)
    finally:
        stop(server)


def test_serving_command_writes_a_template_that_runs(lite_only, tmp_path):
    code, output = lite_only.run(str(lite_only.bin / "serving"), cwd=tmp_path)
    assert code == 0, output
    assert "import openbayes_serving as serv" in (tmp_path / "predictor.py").read_text()
    server = lite_only.serve(["predictor.py", "--host", "127.0.0.1", "--port", "0"], tmp_path)
    try:
        ready(server)
        assert post_json(server, {"values": [2]}).json() == {"doubled": [4]}
    finally:
        stop(server)


def test_start_up_hook_imports_nothing_in_lite_only(lite_only):
    with_hook = startup_modules(lite_only)
    assert not any(name.startswith(("lite_serving", "openbayes")) for name in with_hook), with_hook


def test_start_up_hook_adds_one_finder_however_often_site_reads_it(lite_only):
    # a venv's lib64 links to lib: site reads the same .pth file twice
    code, output = lite_only.run("-c", "import sys; print([type(f).__name__ for f in sys.meta_path])",
                                 cwd=lite_only.path)
    assert code == 0, output
    assert output.count("OpenbayesServingFallback") == 1, output


# -- lite_serving beside openbayes-serving ------------------------------------------------------

def test_python_predictor_py_runs_the_reference_when_it_is_installed(both, model_dir):
    for environ in ({}, {"LITE_SERVING_ALIAS": "0"}):
        code, output = both.run("predictor.py", "--only-import", cwd=model_dir, env=environ)
        assert code == 0, output
        assert "SERV-IS openbayes_serving" in output, output
        code, output = both.run("-c", "import openbayes_serving, flask; print(openbayes_serving.__file__)",
                                cwd=model_dir, env=environ)
        assert code == 0 and "site-packages/openbayes_serving/" in output, output


def test_alias_variable_makes_python_predictor_py_use_lite_serving(both, model_dir):
    server = both.serve(["predictor.py", "--host", "127.0.0.1", "--port", "0"], model_dir,
                        env={"LITE_SERVING_ALIAS": "1"})
    try:
        serves_with_lite(server)
        assert "openbayes_serving is served by lite_serving; the installed openbayes-serving 0.5.0 " \
               "is not used" in server.log
    finally:
        stop(server)


@pytest.mark.parametrize("command", [["lite-serving"], ["-m", "lite_serving"]], ids=["script", "module"])
def test_lite_serving_command_serves_with_lite_serving(both, model_dir, command):
    if command == ["lite-serving"]:
        command = [str(both.bin / "lite-serving")]
    server = both.serve([*command, str(model_dir), "--host", "127.0.0.1", "--port", "0"], model_dir)
    try:
        serves_with_lite(server)
        lines = [line for line in server.lines if "openbayes_serving is served by lite_serving" in line]
        assert len(lines) == 1 and "the installed openbayes-serving 0.5.0 is not used" in lines[0], server.log
        assert "Openbayes Serving" not in server.log  # none of the reference's own log lines
    finally:
        stop(server)


def test_start_up_hook_imports_nothing_beside_the_reference(both):
    assert not any(name.startswith(("lite_serving", "openbayes", "flask"))
                   for name in startup_modules(both))
    forced = startup_modules(both, {"LITE_SERVING_ALIAS": "1"})
    assert "lite_serving_alias" in forced and not any(n.startswith("lite_serving.") for n in forced)
