#!/usr/bin/env python3
"""What the access log costs: the echo at 32 connections, access log on (text and JSON lines) and
off, and another lite_serving tree (a checkout of an earlier commit) for comparison, in one run.

    python bench/access_log_cost.py --baseline /path/to/other/tree [--rounds 3] [--duration 8]

Every configuration takes its turn in each round (the machine's noise falls on all of them
alike); the server runs on the first CPU and wrk on the second, and the access lines go to a
file, as they would in production. Prints requests per second per configuration (the median of
the rounds) and the server's CPU time per request (user + system, from /proc: on a shared
machine it varies much less than the throughput), each with its ratio to ``--no-access-log``.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness.fixtures import BODIES, write_bodies  # noqa: E402
from harness.paths import ECHO_DIR  # noqa: E402
from harness.wrk import ensure_wrk, run_wrk  # noqa: E402

PREDICTOR = ECHO_DIR
CONNECTIONS = 32


def configurations(tree, baseline):
    return {
        "access log, text": (tree, []),
        "access log, JSON": (tree, ["--log-format", "json"]),
        "--no-access-log": (tree, ["--no-access-log"]),
        "baseline, access log": (baseline, []),
    }


def start(tree, flags, log_file, cpu):
    env = dict(os.environ, PYTHONPATH=str(tree), LITE_SERVING_ALIAS="1")
    env.pop("OPENBAYES_SERVING_PRODUCTION", None)
    proc = subprocess.Popen(
        ["taskset", "-c", cpu, sys.executable, "-m", "lite_serving", str(PREDICTOR),
         "--host", "127.0.0.1", "--port", "0", *flags],
        cwd=PREDICTOR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=log_file, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = Path(log_file.name).read_text(errors="replace")
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
        if m and "ready in" in text:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"server did not start:\n{Path(log_file.name).read_text()}")


def cpu_seconds(pid):
    """User + system CPU time of process ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="another lite_serving tree")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    args = p.parse_args(argv)
    ensure_wrk()
    write_bodies()
    body = BODIES["json"]
    configs = configurations(HERE.parent, args.baseline.resolve())
    rps = {name: [] for name in configs}
    cpu = {name: [] for name in configs}
    for rnd in range(args.rounds):
        # the order turns round each round, so that a drift in the machine's load does not
        # fall on one configuration
        order = list(configs.items())
        for name, (tree, flags) in order[::-1] if rnd % 2 else order:
            with tempfile.NamedTemporaryFile("w", suffix=".log") as log_file:
                proc, port = start(tree, flags, log_file, "0")
                try:
                    url = f"http://127.0.0.1:{port}/"
                    run_wrk(url, body, CONNECTIONS, 1, "1")   # warm-up
                    before = cpu_seconds(proc.pid)
                    result = run_wrk(url, body, CONNECTIONS, args.duration, "1")
                    used = cpu_seconds(proc.pid) - before
                finally:
                    stop(proc)
                lines = sum(1 for _ in open(log_file.name, errors="replace"))
            rps[name].append(result.rps)
            per_request = used / (result.rps * args.duration) * 1e6
            cpu[name].append(per_request)
            print(f"round {rnd + 1} {name:24s} {result.rps:10.0f} req/s  {per_request:6.1f} us "
                  f"CPU/request  ({lines} log lines)", flush=True)
    off = statistics.median(rps["--no-access-log"])
    off_cpu = statistics.median(cpu["--no-access-log"])
    print(f"\necho, {CONNECTIONS} connections, median of {args.rounds} rounds of {args.duration} s:")
    for name in configs:
        median, cost = statistics.median(rps[name]), statistics.median(cpu[name])
        print(f"  {name:24s} {median:10.0f} req/s ({median / off:5.3f} x)   {cost:6.1f} us "
              f"CPU/request ({cost / off_cpu:5.3f} x --no-access-log)")


if __name__ == "__main__":
    main()
