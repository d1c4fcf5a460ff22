"""Shared fixtures: real lite_serving processes on real sockets.

``serve(source, *flags, env=...)`` writes ``source`` as predictor.py in a
fresh directory, starts ``python -m lite_serving DIR --port 0`` there and
returns a :class:`ServerProcess` once its log says it is ready.

The helpers live in the ``support`` package beside this file; tests/ is put on
``sys.path`` here so that every test folder imports them the same way.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import servers  # noqa: E402

# what test files took from conftest before tests/support existed
from support.servers import ECHO, LISTENING, READY, ServerProcess, launch, write_predictor  # noqa: E402,F401


@pytest.fixture
def serve(tmp_path):
    """Start servers for a test; all are stopped at its end."""
    started = []
    counter = [0]

    def start(source, *flags, env=None, files=None, wait=True):
        counter[0] += 1
        started.append(servers.start(tmp_path / f"model{counter[0]}", source, *flags, env=env,
                                     files=files, wait=wait))
        return started[-1]

    yield start
    for server in started:
        servers.stop(server)


@pytest.fixture
def echo_server(serve):
    return serve(ECHO)
