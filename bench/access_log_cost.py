#!/usr/bin/env python3
"""What the access log costs: the echo at 32 connections, access log on (text and JSON lines) and
off, and another lite_serving tree (a checkout of an earlier commit) for comparison, in one run.

    python bench/access_log_cost.py --baseline /path/to/other/tree [--rounds 20] [--duration 2]

All the servers run from start to end; each takes a short turn in every round, the order
turned round each round (the machine's drift falls on all of them alike). The servers run on
the first CPU and wrk on the second, and the access lines go to files, as they would in
production. Prints requests per second per configuration and the server's CPU time per request
(user + system, from /proc), each with the median of its per-round ratios to
``--no-access-log``.
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
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--duration", type=int, default=2)
    args = p.parse_args(argv)
    ensure_wrk()
    write_bodies()
    body = BODIES["json"]
    configs = configurations(HERE.parent, args.baseline.resolve())
    rps = {name: [] for name in configs}
    cpu = {name: [] for name in configs}
    servers = {}
    with tempfile.TemporaryDirectory() as logs:
        try:
            # every server runs the whole time (idle but for its turn): short turns, many of
            # them, so that the machine's drift falls on all of them alike
            for i, (name, (tree, flags)) in enumerate(configs.items()):
                log_file = open(Path(logs) / f"{i}.log", "w")
                proc, port = start(tree, flags, log_file, "0")
                servers[name] = (proc, f"http://127.0.0.1:{port}/", log_file)
                run_wrk(servers[name][1], body, CONNECTIONS, 1, "1")   # warm-up
            for rnd in range(args.rounds):
                order = list(configs) if rnd % 2 == 0 else list(configs)[::-1]
                for name in order:
                    proc, url, _ = servers[name]
                    before = cpu_seconds(proc.pid)
                    result = run_wrk(url, body, CONNECTIONS, args.duration, "1")
                    used = cpu_seconds(proc.pid) - before
                    rps[name].append(result.rps)
                    cpu[name].append(used / (result.rps * args.duration) * 1e6)
                print(f"round {rnd + 1:2d} " + "  ".join(
                    f"{name}: {rps[name][-1]:6.0f} req/s {cpu[name][-1]:5.1f} us" for name in configs),
                    flush=True)
            lines = {name: sum(1 for _ in open(log_file.name, errors="replace"))
                     for name, (_, _, log_file) in servers.items()}
        finally:
            for proc, _, log_file in servers.values():
                stop(proc)
                log_file.close()
    off = "--no-access-log"
    print(f"\necho, {CONNECTIONS} connections, {args.rounds} rounds of {args.duration} s each "
          "(ratios: the median of each round's ratio to --no-access-log)")
    for name in configs:
        paired = statistics.median(a / b for a, b in zip(rps[name], rps[off]))
        paired_cpu = statistics.median(a / b for a, b in zip(cpu[name], cpu[off]))
        print(f"  {name:24s} {statistics.median(rps[name]):8.0f} req/s ({paired:5.3f} x)   "
              f"{statistics.median(cpu[name]):5.1f} us CPU/request ({paired_cpu:5.3f} x)   "
              f"{lines[name]} lines logged")


if __name__ == "__main__":
    main()
