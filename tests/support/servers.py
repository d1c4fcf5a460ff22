"""Starting lite_serving processes for the tests, and waiting on what they log.

Every process is started in a session of its own (``start_new_session``), so that stopping it
by process group ends whatever it spawned too (workers, reloaded children).
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


def start(directory, source, *flags, env=None, files=None, wait=True):
    """Write ``source`` as DIR/predictor.py and serve it on 127.0.0.1, a free port."""
    write_predictor(directory, source, files)
    flags = list(flags)
    if "--port" not in flags:
        flags += ["--port", "0"]
    if "--host" not in flags:
        flags += ["--host", "127.0.0.1"]
    server = launch(directory, *flags, env=env)
    if wait:
        ready(server)
    return server


def ready(server):
    """Wait for the listening and ready lines; set ``host`` and ``port`` from them."""
    m = server.wait_for(LISTENING)
    server.host = m.group(1) or m.group(2)
    server.port = int(m.group(3))
    server.wait_for(READY)
    return server


def kill(server):
    if server.proc.poll() is None:
        server.stop(signal.SIGKILL)
    else:
        server.stop()


def clean_env(extra=None):
    """The environment conftest's ``launch`` gives a server, for processes started by hand:
    the lite_serving the tests import leads PYTHONPATH, no platform variables."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root(), os.environ.get("PYTHONPATH")) if p)
    for name in ("OPENBAYES_SERVING_PRODUCTION", "OPENBAYES_JOB_URL", "OPENBAYES_SERVING_PORT",
                 "LITE_SERVING_ALIAS"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def spawn(args, cwd, env=None):
    """Start ``python *args`` in ``cwd`` with its stderr collected like a server's log."""
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=clean_env(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return ServerProcess(proc, cwd)


def run_to_exit(args, cwd, env=None, timeout=60):
    """Run ``python *args`` to its end; (return code, stdout + stderr text)."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=clean_env(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def serve_to_exit(directory, source, *flags, env=None, files=None, timeout=60):
    """``python -m lite_serving DIR flags`` for a predictor expected to stop by itself."""
    write_predictor(directory, source, files)
    flags = list(flags)
    if "--port" not in flags:
        flags += ["--port", "0"]
    if "--host" not in flags:
        flags += ["--host", "127.0.0.1"]
    return run_to_exit(["-m", "lite_serving", str(directory), *flags], directory, env, timeout)


def dedent(source):
    return textwrap.dedent(source)


def wait_for_new(server, mark, pattern, timeout=20.0):
    """Wait for a log line at index >= ``mark`` (``len(server.lines)`` taken earlier)
    matching ``pattern``; returns the line."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.lines[mark:]:
            if regex.search(line):
                return line
        if server.proc.poll() is not None and not server._reader.is_alive():
            break
        time.sleep(0.01)
    raise AssertionError(f"no new log line matched {pattern!r}; new lines:\n"
                         + "".join(server.lines[mark:]))


def connection_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for_exit(server, timeout=30.0):
    """The exit status once the server has ended by itself; AssertionError if it does not."""
    try:
        code = server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running after {timeout} s; log:\n{server.log}") from None
    server._reader.join(5)
    return code
