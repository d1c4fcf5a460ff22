"""Shared fixtures: real lite_serving processes on real sockets.

``serve(source, *flags, env=...)`` writes ``source`` as predictor.py in a
fresh directory, starts ``python -m lite_serving DIR --port 0`` there and
returns a :class:`ServerProcess` once its log says it is ready.

The helpers live in the ``support`` package beside this file; tests/ is put on
``sys.path`` here so that every test folder imports them the same way.
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support.servers import (  # noqa: E402,F401
    ECHO,
    LISTENING,
    READY,
    ServerProcess,
    launch,
    write_predictor,
)


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


@pytest.fixture
def echo_server(serve):
    return serve(ECHO)
