#!/usr/bin/env python3
"""How long readiness probes get a wrong answer while a predictor loads.

    python bench/tools/probe_during_load.py [--python PY] [--init-seconds 3] [--runs 3]

Serves a predictor whose ``__init__`` sleeps ``--init-seconds`` with ``PY -m
lite_serving DIR`` and, from the spawn until ``POST /`` is answered 200, asks
every 20 ms on fresh connections: a TCP connect, ``GET /`` and ``POST /``. A probe
answer is wrong when it says "up" (connection accepted, ``GET /`` 200) while
``POST /`` would not run predict (503, or refused). Prints, per run, how long each
probe said "up" before predict was served, and the medians.
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.servers import free_port  # noqa: E402

PREDICTOR = """
import os
import time

import openbayes_serving as serv


class Predictor:
    def __init__(self):
        time.sleep(float(os.environ["INIT_SECONDS"]))

    def predict(self, json):
        return json


if __name__ == "__main__":
    serv.run(Predictor)
"""


def ask(port, request):
    """The status of the answer to ``request``; 0 when the connection is refused or fails."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            if request is None:
                return 1  # connected
            s.sendall(request)
            head = s.recv(64)
    except OSError:
        return 0
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


def one_run(python, directory, init_seconds):
    port = free_port()
    env = dict(os.environ, INIT_SECONDS=str(init_seconds))
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    proc = subprocess.Popen([python, "-m", "lite_serving", directory, "--host", "127.0.0.1",
                             "--port", str(port)], cwd=directory, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    first_up = {"tcp": None, "get": None}
    try:
        while time.monotonic() - started < init_seconds + 30:
            now = time.monotonic() - started
            tcp, get, post = ask(port, None), ask(port, GET), ask(port, POST)
            if tcp and first_up["tcp"] is None:
                first_up["tcp"] = now
            if get == 200 and first_up["get"] is None:
                first_up["get"] = now
            if post == 200:
                return {name: (now - t if t is not None else 0.0) for name, t in first_up.items()}, now
            time.sleep(0.02)
        raise RuntimeError("predict was never served")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--init-seconds", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "predictor.py"), "w") as f:
            f.write(PREDICTOR)
        wrong = {"tcp": [], "get": []}
        for i in range(args.runs):
            up, served = one_run(args.python, directory, args.init_seconds)
            for name in wrong:
                wrong[name].append(up[name])
            print(f"run {i + 1}: predict served after {served:.2f} s; TCP probe up {up['tcp']:.2f} s "
                  f"early, GET / 200 {up['get']:.2f} s early")
        print(f"median: TCP probe wrong for {statistics.median(wrong['tcp']):.2f} s, "
              f"GET / wrong for {statistics.median(wrong['get']):.2f} s "
              f"(__init__ takes {args.init_seconds:g} s)")


if __name__ == "__main__":
    main()
