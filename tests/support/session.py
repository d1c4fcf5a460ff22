"""Servers in a session of their own, stopped with every process they started (``os.killpg``)."""

import os
import signal
import subprocess
import sys

from support.servers import ServerProcess, clean_env, ready


def start(directory, *flags, env=None):
    """``python -m lite_serving DIR flags`` on 127.0.0.1, a free port; returned once ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lite_serving", str(directory), "--host", "127.0.0.1", "--port", "0",
         *flags],
        cwd=directory, env=clean_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    server = ServerProcess(proc, directory)
    try:
        ready(server)
    except BaseException:
        stop(server)
        raise
    return server


def stop(server, timeout=15.0):
    """SIGTERM the server's process group, SIGKILL it if it is still there after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    server._reader.join(5)
    return server.proc.returncode
