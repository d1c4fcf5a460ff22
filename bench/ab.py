#!/usr/bin/env python3
"""A/B of this checkout against a base commit: the echo load and cold start, in one run.

    python bench/ab.py                  # against 74da974: 3 rounds of echo, 7 cold starts each
    python bench/ab.py --base abc1234 --rounds 5

Echo: ``{"inputs": [1, 2, 3, 4], "name": "echo"}`` POSTed as JSON to the echo predictor
(``examples/echo/``) by wrk, ``--connections`` keep-alive connections (32; ``1,32`` measures
both, each every round), ``--seconds`` per load, the two servers taking turns each round; best
round kept, and the median of the paired rounds' ratios. Cold start: the echo server spawned and POSTed to in
a tight loop until it answers, ms from the spawn (and the server's CPU ms by then), median of
``--starts`` starts per side, sides alternating. The server is pinned to one CPU and wrk and
this script to the other; the machine is shared, so only the ratios of this run count.
Writes ``results/ab.{json,md}``.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.envs import lite_env  # noqa: E402
from harness.machine import pin_client  # noqa: E402
from harness.paths import ECHO_DIR, REPO_ROOT, RESULTS_DIR, WORK_DIR  # noqa: E402
from harness.servers import free_port  # noqa: E402
from harness.wrk import ensure_wrk, parse_report  # noqa: E402
from ingest import Server, build_base, cpu_seconds  # noqa: E402

HOST = "127.0.0.1"
APP = ECHO_DIR
ECHO = json.dumps({"inputs": [1, 2, 3, 4], "name": "echo"}).encode()
POST_SCRIPT = Path(__file__).resolve().parent / "lua" / "post.lua"


def echo_rps(port, seconds, cpu, connections=32):
    body = WORK_DIR / "ab-echo.json"
    body.write_bytes(ECHO)
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
           str(POST_SCRIPT), f"http://{HOST}:{port}/"]
    env = {**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_CONTENT_TYPE": "application/json"}
    result = parse_report(subprocess.run(cmd, capture_output=True, text=True, env=env,
                                         check=True).stdout)
    if result.problems():
        raise RuntimeError("; ".join(result.problems()))
    return result.rps


def cold_start(python, env, cpu):
    """(ms from spawn to the first answered predict, the server's CPU ms by then)."""
    port = free_port()
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(ECHO) + ECHO)
    began = time.perf_counter()
    proc = subprocess.Popen(["taskset", "-c", str(cpu), python, "-m", "lite_serving", str(APP),
                             "--host", HOST, "--port", str(port), "--no-access-log"], cwd=APP,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - began > 60:
                raise RuntimeError("the server did not answer")
            try:
                with socket.create_connection((HOST, port), timeout=5) as sock:
                    sock.sendall(request)
                    answer = b""
                    while True:
                        data = sock.recv(65536)
                        if not data:
                            break
                        answer += data
                if answer.startswith(b"HTTP/1.1 200"):
                    ms = (time.perf_counter() - began) * 1000
                    break
            except OSError:
                pass
        cpu_ns = 0   # run time of all its threads, in ns (/proc/PID/task/*/schedstat)
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            try:
                cpu_ns += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError):
                pass
        return ms, cpu_ns / 1e6
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def echo_rows(counts, rps, rounds, args):
    """The table's echo rows, for each connection count."""
    rows = []
    for c in counts:
        mine, base = rounds[c]["lite"], rounds[c]["base"]
        cpu_mine = statistics.median(r[1] for r in mine)
        cpu_base = statistics.median(r[1] for r in base)
        rows += [f"| echo, {c} connection{'s' if c > 1 else ''}, req/s (best of {args.rounds} × "
                 f"{args.seconds} s) | {rps[c]['lite']:,.0f} | {rps[c]['base']:,.0f} | "
                 f"{rps[c]['lite'] / rps[c]['base']:.3f}× |",
                 f"| echo, {c}: req/s, median of the rounds' ratios (paired rounds) | | | "
                 f"{statistics.median(a[0] / b[0] for a, b in zip(mine, base)):.3f}× |",
                 f"| echo, {c}: server CPU µs a request (median) | {cpu_mine:.1f} | {cpu_base:.1f} | "
                 f"{cpu_base / cpu_mine:.3f}× less |"]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="74da974")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--starts", type=int, default=7)
    p.add_argument("--connections", default="32",
                   help="comma-separated connection counts, each measured every round (e.g. 1,32)")
    p.add_argument("--fresh", action="store_true",
                   help="start both servers anew every round (a process's own layout, hash seed and "
                        "address space averaged out over the rounds)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    server_cpu, client_cpu = pin_client()
    ensure_wrk(print)
    sides = {"lite": lite_env(REPO_ROOT), "base": lite_env(build_base(args.base))}
    argv_of = [sys.executable, "-m", "lite_serving", str(APP), "--host", HOST, "--port", "{port}",
               "--no-access-log"]
    servers = [Server(key, key, argv_of, env, server_cpu) for key, env in sides.items()]
    counts = [int(c) for c in args.connections.split(",")]
    rps = {c: {} for c in counts}
    # (req/s, server CPU µs a request) a round, per connection count and side
    rounds = {c: {server.key: [] for server in servers} for c in counts}
    try:
        for server in servers:
            server.start()
        for server in servers:   # warm-up
            echo_rps(server.port, 1, client_cpu)
        for round_ in range(args.rounds):
            if args.fresh and round_:   # new processes: what one process's layout gives averages out
                for server in servers:
                    server.stop()
                for server in servers[::-1] if round_ % 2 else servers:
                    server.start()
                    echo_rps(server.port, 1, client_cpu)
            # the order turns round each round: a drift in the machine's load falls on both
            for conns in counts:
                for server in servers[::-1] if round_ % 2 else servers:
                    used = cpu_seconds(server.proc.pid)
                    got = echo_rps(server.port, args.seconds, client_cpu, conns)
                    per_request = (cpu_seconds(server.proc.pid) - used) / (got * args.seconds) * 1e6
                    rps[conns][server.key] = max(got, rps[conns].get(server.key, 0))
                    rounds[conns][server.key].append((got, per_request))
                    print(f"echo {conns} conn {server.key}: {got:,.0f} req/s, {per_request:.1f} µs "
                          "CPU a request", flush=True)
    finally:
        for server in servers:
            server.stop()
    starts = {key: [] for key in sides}
    for _ in range(args.starts + 1):   # the first start of each side is not counted
        for key, env in sides.items():
            starts[key].append(cold_start(sys.executable, env, server_cpu))
    cold = {key: (statistics.median(ms for ms, _ in runs[1:]), statistics.median(c for _, c in runs[1:]))
            for key, runs in starts.items()}
    lines = [f"# A/B: this checkout against {args.base}\n",
             f"One run, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, shared machine (2 CPUs: "
             "server on one, client on the other): compare within the run.\n",
             "| measure | this checkout | base | ratio |", "| --- | --- | --- | --- |",
             *echo_rows(counts, rps, rounds, args),
             f"| cold start to first answer, ms (median of {args.starts}) | {cold['lite'][0]:.1f} | "
             f"{cold['base'][0]:.1f} | {cold['base'][0] / cold['lite'][0]:.3f}× faster |",
             f"| server CPU by then, ms (median) | {cold['lite'][1]:.1f} | {cold['base'][1]:.1f} | "
             f"{cold['base'][1] / cold['lite'][1]:.3f}× less |"]
    markdown = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ab.md").write_text(markdown)
    (args.out / "ab.json").write_text(json.dumps({"base": args.base, "echo_rps": rps,
                                                  "echo_rounds": rounds, "cold_start_ms": cold,
                                                  "starts": starts}, indent=1))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
