"""Shared fixtures: real lite_serving processes on real sockets.

``serve(source, *flags, env=...)`` writes ``source`` as predictor.py in a
fresh directory, starts ``python -m lite_serving DIR --port 0`` there and
returns a :class:`ServerProcess` once its log says it is ready.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

READY = re.compile(r"ready in \d+ ms")
LISTENING = re.compile(r"listening on https?://(?:\[([^\]]+)\]|([^/:\s\[]+)):(\d+)")


class ServerProcess:
    """A running server: ``port``, ``proc``, the log lines so far in ``log``."""

    def __init__(self, proc, directory):
        self.proc = proc
        self.directory = directory
        self.lines = []
        self.host = "127.0.0.1"
        self.port = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self):
        return "".join(self.lines)

    def wait_for(self, pattern, timeout=20.0):
        """Wait until a log line matches ``pattern``; returns the match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = regex.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(f"log never matched {regex.pattern!r}; log:\n{self.log}")

    def connect(self, timeout=10.0):
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        return sock

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Signal the server, wait for it, then end whatever is left of its process group
        (servers start in a session of their own: workers, helpers they spawned)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reader.join(5)
        return self.proc.returncode


def examples(default):
    """Hypothesis examples for a property test: LITE_SERVING_FUZZ_EXAMPLES when set (fewer under
    emulation, many more for a long fuzzing session), else ``default``."""
    return int(os.environ.get("LITE_SERVING_FUZZ_EXAMPLES", "0") or 0) or default


def package_root():
    """The directory holding the lite_serving the tests import (site-packages or a source tree)."""
    import lite_serving
    return os.path.dirname(os.path.dirname(os.path.abspath(lite_serving.__file__)))


def launch(directory, *flags, env=None, cwd=None, module_args=None, pythonpath_first=None):
    """Start ``python -m lite_serving DIR flags`` (not waiting for readiness).

    The server imports the same lite_serving as the tests: its directory leads PYTHONPATH
    (after ``pythonpath_first``, for tests that shadow a module).
    """
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pythonpath_first, package_root(), os.environ.get("PYTHONPATH")) if p)
    full_env.pop("OPENBAYES_SERVING_PRODUCTION", None)
    full_env.pop("OPENBAYES_JOB_URL", None)
    full_env.pop("OPENBAYES_SERVING_PORT", None)
    full_env.update(env or {})
    args = module_args if module_args is not None else [str(directory), *flags]
    proc = subprocess.Popen([sys.executable, "-m", "lite_serving", *args],
                            cwd=cwd or directory, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return ServerProcess(proc, directory)


def write_predictor(directory, source, files=None):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "predictor.py").write_text(textwrap.dedent(source))
    for name, content in (files or {}).items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return directory


@pytest.fixture
def serve(tmp_path):
    """Start servers for a test; all are stopped at its end."""
    started = []
    counter = [0]

    def start(source, *flags, env=None, files=None, wait=True):
        counter[0] += 1
        directory = write_predictor(tmp_path / f"model{counter[0]}", source, files)
        flags = list(flags)
        if "--port" not in flags:
            flags += ["--port", "0"]
        if "--host" not in flags:
            flags += ["--host", "127.0.0.1"]
        server = launch(directory, *flags, env=env)
        started.append(server)
        if wait:
            m = server.wait_for(LISTENING)
            server.host = m.group(1) or m.group(2)
            server.port = int(m.group(3))
            server.wait_for(READY)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM)


ECHO = """
    import openbayes_serving as serv

    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            return json

    if __name__ == "__main__":
        serv.run(Predictor)
"""


@pytest.fixture
def echo_server(serve):
    return serve(ECHO)
