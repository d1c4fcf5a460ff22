"""Helpers for the behaviour tests: module-scoped servers, other ways of starting one.

conftest's ``serve`` fixture is per test; servers that many tests of a module
can share are started here with :func:`start`, through conftest's ``launch``.
"""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

from conftest import LISTENING, READY, ServerProcess, launch, write_predictor


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


def package_root():
    """The directory holding the lite_serving these tests import."""
    import lite_serving
    return os.path.dirname(os.path.dirname(os.path.abspath(lite_serving.__file__)))


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
