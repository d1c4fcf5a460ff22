"""Processes for the migration and supervisor tests: each started in a session of its own and
stopped with everything it spawned (workers, reloaded children), by process group."""

import os
import signal
import socket
import subprocess
import sys

from support.servers import ServerProcess, clean_env

LOCAL = ("--host", "127.0.0.1")


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, cwd, env=None, python=None, environ=None):
    """``python *args`` in ``cwd``, in its own session; its stdout and stderr (the reference
    logs to stdout) are collected like a server's log.

    ``environ``: the whole environment (for another virtual environment's interpreter);
    otherwise the tests' own lite_serving leads PYTHONPATH (``clean_env``) plus ``env``.
    """
    proc = subprocess.Popen([python or sys.executable, *args], cwd=cwd,
                            env=environ if environ is not None else clean_env(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.stderr = proc.stdout  # ServerProcess reads its log from proc.stderr
    return ServerProcess(proc, cwd)


def serve(directory, *flags, env=None):
    """``python -m lite_serving DIR flags`` on 127.0.0.1 (a free port unless ``flags`` say)."""
    flags = list(flags)
    if "--port" not in flags:
        flags += ["--port", "0"]
    if "--host" not in flags:
        flags += list(LOCAL)
    return start(["-m", "lite_serving", str(directory), *flags], directory, env)


def stop(server, sig=signal.SIGKILL):
    """Signal the server's whole process group and reap the server."""
    try:
        os.killpg(server.proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
    server._reader.join(5)
    return server.proc.returncode
