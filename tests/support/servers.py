"""Starting lite_serving processes for the tests, and waiting on what they log.

- :func:`start` serves a predictor (``source`` written as DIR/predictor.py, or DIR as it is) on
  127.0.0.1 and a free port, and returns the :class:`ServerProcess` once its log says it is
  ready; conftest's ``serve`` fixture is :func:`start` with the servers stopped at the test's end,
  and :func:`module_server` makes a fixture of one server shared by a module's tests.
  :func:`launch` is the step under it (no waiting), for tests that start a server their own way.
- :func:`spawn` starts any ``python ARGS`` the same way (the reference server, a predictor.py);
  :func:`run_to_exit` and :func:`serve_to_exit` run one to its end.
- :func:`stop` ends a server with everything it spawned.

Every process is started in a session of its own (``start_new_session``) and stopped by its
process group, so that workers and the processes a predictor starts end with it.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from support.waits import wait_until

READY = re.compile(r"ready in \d+ ms")
LISTENING = re.compile(r"listening on https?://(?:\[([^\]]+)\]|([^/:\s\[]+)):(\d+)")
LOCAL = ("--host", "127.0.0.1")


class ServerProcess:
    """A running process: ``proc``, its log lines so far in ``lines`` (``log`` joined), and once
    :func:`ready`, the ``host`` and ``port`` it listens on."""

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

    def ended(self):
        """True once the process has exited and its whole log has been read."""
        return self.proc.poll() is not None and not self._reader.is_alive()

    def wait_for(self, pattern, timeout=20.0, start=0):
        """Wait until a log line (from index ``start`` on) matches ``pattern``; the match."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern

        def found():
            for line in self.lines[start:]:
                m = regex.search(line)
                if m:
                    return m
            return None

        try:
            return wait_until(found, timeout, what=f"a log line matching {regex.pattern!r}",
                              give_up=self.ended)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{''.join(self.lines[start:])}") from None

    def connect(self, timeout=10.0):
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=15.0, group=False):
        """Send ``sig`` to the server (to its whole process group with ``group``), wait up to
        ``timeout`` for it to exit (SIGKILL after that), then SIGKILL whatever is left of its
        process group (workers, processes its predictor started); the exit status."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig) if group else self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
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


def clean_env(extra=None, pythonpath_first=None):
    """The environment of a process the tests start: the lite_serving the tests import leads
    PYTHONPATH (after ``pythonpath_first``, for tests that shadow a module), no platform
    variables; then ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pythonpath_first, package_root(), os.environ.get("PYTHONPATH")) if p)
    for name in ("OPENBAYES_SERVING_PRODUCTION", "OPENBAYES_JOB_URL", "OPENBAYES_SERVING_PORT",
                 "LITE_SERVING_ALIAS"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def spawn(args, cwd, env=None, python=None, environ=None, log_stdout=False, pythonpath_first=None):
    """Start ``python ARGS`` in ``cwd``, in a session of its own, its stderr (and stdout with
    ``log_stdout``) collected as its log. ``environ``: the whole environment (for another
    virtual environment's interpreter), else :func:`clean_env` with ``env``."""
    proc = subprocess.Popen(
        [python or sys.executable, *args], cwd=cwd,
        env=environ if environ is not None else clean_env(env, pythonpath_first),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if log_stdout else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log_stdout else subprocess.PIPE, text=True,
        start_new_session=True)
    if log_stdout:
        proc.stderr = proc.stdout   # ServerProcess reads its log from proc.stderr
    return ServerProcess(proc, cwd)


def launch(directory, *flags, env=None, cwd=None, module_args=None, pythonpath_first=None,
           log_stdout=False):
    """``python -m lite_serving DIR flags`` (or ``module_args``), not waiting for readiness."""
    args = module_args if module_args is not None else [str(directory), *flags]
    server = spawn(["-m", "lite_serving", *args], cwd or directory, env,
                   log_stdout=log_stdout, pythonpath_first=pythonpath_first)
    server.directory = directory
    return server


def local_flags(flags):
    """``flags`` with 127.0.0.1 and a free port unless they name a host or a port."""
    flags = list(flags)
    if "--port" not in flags:
        flags += ["--port", "0"]
    if "--host" not in flags:
        flags += list(LOCAL)
    return flags


def start(directory, source=None, *flags, env=None, files=None, wait=True, log_stdout=False):
    """Serve DIR (``source`` written as DIR/predictor.py first, with ``files`` beside it) on
    127.0.0.1 and a free port unless ``flags`` say otherwise; with ``wait``, returned once its
    log says it listens and is ready (stopped, and AssertionError, if it never is)."""
    if source is not None:
        write_predictor(directory, source, files)
    server = launch(directory, *local_flags(flags), env=env, log_stdout=log_stdout)
    if wait:
        try:
            ready(server)
        except BaseException:
            stop(server)
            raise
    return server


def module_server(name, source, *flags, env=None, files=None):
    """A module-scoped fixture: :func:`start` of ``source`` (in a fresh directory named after
    ``name``) for the module's first test that asks for it, stopped after its last.

        server = module_server("gate", SOURCE, "--threads", "2")
    """
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory):
        server = start(tmp_path_factory.mktemp(name), source, *flags, env=env, files=files)
        yield server
        stop(server)

    return fixture


def ready(server, timeout=30.0):
    """Wait for the listening and ready lines; set ``host`` and ``port`` from them."""
    m = server.wait_for(LISTENING, timeout)
    server.host = m.group(1) or m.group(2)
    server.port = int(m.group(3))
    server.wait_for(READY, timeout)
    return server


def stop(server, sig=signal.SIGKILL, timeout=30.0):
    """Signal the server's whole process group, wait for the server, SIGKILL what is left;
    the exit status."""
    return server.stop(sig, timeout, group=True)


kill = stop


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


# the echo predictor: the repository's own example
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "echo",
                       "predictor.py"), encoding="utf-8") as _example:
    ECHO = _example.read()


def run_to_exit(args, cwd, env=None, timeout=60):
    """Run ``python *args`` to its end; (return code, stdout + stderr text)."""
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=clean_env(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def serve_to_exit(directory, source, *flags, env=None, files=None, timeout=60):
    """``python -m lite_serving DIR flags`` for a predictor expected to stop by itself."""
    write_predictor(directory, source, files)
    return run_to_exit(["-m", "lite_serving", str(directory), *local_flags(flags)], directory, env,
                       timeout)


def dedent(source):
    return textwrap.dedent(source)


def wait_for_new(server, mark, pattern, timeout=20.0):
    """Wait for a log line at index >= ``mark`` (``len(server.lines)`` taken earlier)
    matching ``pattern``; returns the line."""
    return server.wait_for(pattern, timeout, start=mark).string


def connection_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_exit(server, timeout=30.0):
    """The exit status once the server has ended by itself; AssertionError if it does not."""
    try:
        code = server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running after {timeout} s; log:\n{server.log}") from None
    server._reader.join(5)
    return code
