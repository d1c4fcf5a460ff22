#!/usr/bin/env python3
"""Ingest across body sizes: lite_serving (this checkout), lite_serving at a base commit, and the
reference, side by side in one run.

    python bench/ingest.py                      # full matrix, about 15 minutes on 2 cores
    python bench/ingest.py --quick              # 1 MiB, 1 MiB + 8 B, 4 MiB, 4 MiB + 8 B, 16 MiB; 4 connections

Each request is a MessagePack body ``{"x": <bin>}`` of exactly the size named, POSTed to a
predictor answering ``{"n": len(json["x"])}`` (``servers/ingest/``), with Content-Length or
chunked (256 KiB chunks), over 1 or 4 keep-alive connections. Sizes: every power of two from
64 KiB to 64 MiB and each one plus 8 bytes. The client is wrk (``lua/raw.lua`` sends the
ready-made request bytes), pinned to one CPU and the servers to the other. Every cell is measured ``--rounds`` times, the servers taking turns
within a round, and the best round is kept: the machine is shared, so what matters is the ratio
of servers measured in the same run. MB = 10^6 bytes. Sizes from 16 MiB get twice the seconds.
Beside MB/s, each load's MB per second of the server process's own CPU time (all its threads,
from /proc/PID/stat) is kept: other work on the machine changes it far less, and with one
connection the client, not the server, sets the pace (lite's I/O thread waits for bytes a third
of the time there, py-spy shows).
``--sink`` adds ``servers/sink/sink.py``: a socket that reads each Content-Length body into a
reused buffer and answers, checking and decoding nothing; no server can ingest faster on the
same machine, so it shows what share of the bound each server reaches.
The reference (and the sink) is not run with chunked bodies: Flask behind uvicorn's WSGI bridge answers them
400 (it reads a body without Content-Length as empty).

The base commit is built in ``.work/base-<commit>`` (``git archive`` of the commit, its Cython
modules compiled in place); the reference runs in the ``reference`` venv of ``run.py``.
Writes ``results/ingest.{json,md,png}``.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.envs import ENV_SPECS, ensure_env, lite_env  # noqa: E402
from harness.machine import pin_client  # noqa: E402
from harness.paths import REPO_ROOT, RESULTS_DIR, SERVERS_DIR, WORK_DIR  # noqa: E402
from harness.servers import answers_200, free_port  # noqa: E402
from harness.wrk import ensure_wrk, parse_report  # noqa: E402

HOST = "127.0.0.1"
APP = SERVERS_DIR / "ingest"
KIB, MIB = 1024, 1024 * 1024
SIZES = [n for p in range(16, 27) for n in (1 << p, (1 << p) + 8)]
QUICK_SIZES = [MIB, MIB + 8, 4 * MIB, 4 * MIB + 8, 16 * MIB]
CHUNK = 256 * KIB
RAW_SCRIPT = Path(__file__).resolve().parent / "lua" / "raw.lua"


def log(text):
    print(text, flush=True)


def body_of(size):
    """``{"x": <bin>}`` packed as MessagePack in exactly ``size`` bytes."""
    import msgpack
    n = size - 10
    while len(msgpack.packb({"x": b"\0" * n})) < size:
        n += 1
    while len(msgpack.packb({"x": b"\0" * n})) > size:
        n -= 1
    body = msgpack.packb({"x": b"\1" * n})
    assert len(body) == size, (size, len(body))
    return body


def request_of(body, chunked):
    head = b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/msgpack\r\n"
    if not chunked:
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    pieces = [head, b"Transfer-Encoding: chunked\r\n\r\n"]
    for at in range(0, len(body), CHUNK):
        piece = body[at:at + CHUNK]
        pieces += [b"%x\r\n" % len(piece), piece, b"\r\n"]
    pieces.append(b"0\r\n\r\n")
    return b"".join(pieces)


def cpu_seconds(pid):
    """CPU time used so far by process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port, request, size, conns, seconds, cpu):
    """(MB/s, requests) of wrk with ``conns`` connections sending ``request`` for ``seconds``."""
    path = WORK_DIR / "ingest-request.bin"
    if not path.exists() or path.stat().st_size != len(request) or path.read_bytes() != request:
        path.write_bytes(request)
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout=30s",
           "--latency", "-s", str(RAW_SCRIPT), f"http://{HOST}:{port}/"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                          env={**os.environ, "BENCH_REQUEST_FILE": str(path)})
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()}")
    result = parse_report(proc.stdout)
    if result.problems():
        raise RuntimeError("; ".join(result.problems()))
    return result.rps * size / 1e6, result.requests


class Server:
    """One server under test, started pinned to ``cpu`` in a session of its own."""

    def __init__(self, key, label, argv, env, cpu):
        self.key, self.label, self.argv, self.env, self.cpu = key, label, argv, env, cpu
        self.proc = None
        self.port = None

    def start(self):
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        logs = WORK_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"ingest-{self.key}.log", "wb") as out:   # the child keeps its own copy
            self.proc = subprocess.Popen(["taskset", "-c", str(self.cpu), *argv], cwd=APP,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while not answers_200(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} did not start (see {out.name})")
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def build_base(commit):
    """lite_serving at ``commit``, its Cython modules built in place: the directory."""
    target = WORK_DIR / f"base-{commit}"
    if not (target / ".built").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        log(f"[setup] building lite_serving {commit} in {target}")
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=target,
                       check=True, capture_output=True)
        (target / ".built").write_text(commit)
    return target


def servers(args, cpu):
    """The servers of this run: this checkout, the base commit, the reference."""
    plain = lite_env()
    lite_argv = ["-m", "lite_serving", str(APP), "--host", HOST, "--port", "{port}", "--no-access-log"]
    out = [Server("lite", "lite", [sys.executable, *lite_argv],
                  lite_env(REPO_ROOT), cpu)]
    if args.base:
        base = build_base(args.base)
        out.append(Server("base", f"lite at {args.base}", [sys.executable, *lite_argv],
                          lite_env(base), cpu))
    if args.sink:
        out.append(Server("sink", "socket sink (the bound)",
                          [sys.executable, str(SERVERS_DIR / "sink" / "sink.py"), "--port", "{port}"],
                          plain, cpu))
    if not args.no_reference:
        python = ensure_env(ENV_SPECS["reference"], log)
        out.append(Server("reference", "reference", [str(python), "predictor.py", "--host", HOST,
                                                     "--port", "{port}"], plain, cpu))
    return out


def label_of(size):
    power = 1 << (size.bit_length() - 1)
    name = f"{power // MIB} MiB" if power >= MIB else f"{power // KIB} KiB"
    return name if size == power else f"{name} + {size - power} B"


def render(doc):
    """The markdown table of ``doc``: MB/s per server, and the checks of the issue."""
    keys = doc["servers"]
    labels = doc["labels"]
    lines = ["# Ingest across body sizes\n", f"`{doc['command']}` — {doc['when']}; best of "
             f"{doc['rounds']} rounds, servers in turn, their order reversed each round; shared machine (2 CPUs: servers on one, the "
             "client on the other), so compare columns within this run. MB/s, MB = 10^6 bytes.\n"]
    for cell in doc["cells"]:
        cell["ratios"] = {}
    failures = []
    for framing in ("content-length", "chunked"):
        for conns in doc["conns"]:
            cells = [c for c in doc["cells"] if c["framing"] == framing and c["conns"] == conns]
            if not cells:
                continue
            lines.append(f"\n## {framing}, {conns} connection{'s' if conns > 1 else ''}\n")
            head = ["body"] + [labels[k] for k in keys]
            if "reference" in keys:
                head += ["lite / reference", "same, per server CPU second"]
            if "base" in keys:
                head.append("lite / base")
            if "sink" in keys:
                head += ["lite / sink", "sink / reference"]
            head.append("lite / power of two below")
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + " --- |" * len(head))
            by_size = {c["size"]: c for c in cells}
            for cell in cells:
                mbs = cell["mbs"]
                row = [label_of(cell["size"])] + [f"{mbs[k]:,.0f}" if k in mbs else "—" for k in keys]
                lite = mbs.get("lite")
                if "reference" in keys:
                    r = lite / mbs["reference"] if lite and mbs.get("reference") else None
                    row.append(f"{r:.1f}×" if r else "—")
                    cpu = cell.get("mb_per_cpu_s", {})
                    c = cpu["lite"] / cpu["reference"] if cpu.get("lite") and cpu.get("reference") else None
                    row.append(f"{c:.1f}×" if c else "—")
                    if r is not None and cell["size"] >= MIB and r < 5:
                        failures.append(f"{framing} {conns}c {label_of(cell['size'])}: {r:.2f}× the reference")
                if "base" in keys:
                    r = lite / mbs["base"] if lite and mbs.get("base") else None
                    row.append(f"{r:.2f}×" if r else "—")
                    if r is not None and r < 1:
                        failures.append(f"{framing} {conns}c {label_of(cell['size'])}: {r:.2f}× the base")
                if "sink" in keys:
                    sink, ref = mbs.get("sink"), mbs.get("reference")
                    row.append(f"{lite / sink:.2f}×" if lite and sink else "—")
                    row.append(f"{sink / ref:.1f}×" if sink and ref else "—")
                power = 1 << (cell["size"].bit_length() - 1)
                below = by_size.get(power) if power != cell["size"] else None
                if below and lite and below["mbs"].get("lite"):
                    r = lite / below["mbs"]["lite"]
                    row.append(f"{r:.2f}×")
                    if r < 0.85:
                        failures.append(f"{framing} {conns}c {label_of(cell['size'])}: {r:.2f}× its power of two")
                else:
                    row.append("")
                lines.append("| " + " | ".join(row) + " |")
    lines.append("\n## Checks\n")
    lines.append("Every size over its power of two at 0.85× or more, every size from 1 MiB at 5× the "
                 "reference or more, no size slower than the base commit: "
                 + ("all hold." if not failures else "these do not hold:\n"))
    lines += [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def chart(json_path, png_path):
    """Draw the chart with the tools venv's matplotlib (a bench-only dependency)."""
    python = ensure_env(ENV_SPECS["tools"], log)
    code = r'''
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
doc = json.load(open(sys.argv[1]))
groups = [(f, c) for f in ("content-length", "chunked") for c in doc["conns"]]
fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4.2), sharey=True)
axes = axes if len(groups) > 1 else [axes]
for ax, (framing, conns) in zip(axes, groups):
    cells = [c for c in doc["cells"] if c["framing"] == framing and c["conns"] == conns]
    for key in doc["servers"]:
        xs = [c["size"] for c in cells if key in c["mbs"]]
        ys = [c["mbs"][key] for c in cells if key in c["mbs"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=doc["labels"][key])
    ax.set_xscale("log", base=2)
    ax.set_title(f"{framing}, {conns} conn.")
    ax.set_xlabel("body bytes")
    ax.grid(True, alpha=0.3)
axes[0].set_ylabel("MB/s ingested")
axes[0].legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
'''
    subprocess.run([str(python), "-c", code, str(json_path), str(png_path)], check=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few sizes around 1 and 4 MiB, 4 connections")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=int, default=1, help="seconds per cell and server (wrk -d)")
    p.add_argument("--base", default="74da974", help="the commit to compare with ('' for none)")
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--sink", action="store_true",
                   help="also run servers/sink/sink.py: reads each body and answers, nothing else "
                        "(how fast any server could ingest here)")
    p.add_argument("--conns", default="1,4")
    p.add_argument("--framings", default="content-length,chunked")
    p.add_argument("--sizes", help="comma-separated body sizes in bytes (default: the matrix)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))   # the servers are stopped on the way out
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else QUICK_SIZES if args.quick else SIZES
    conns = [4] if args.quick else [int(c) for c in args.conns.split(",")]
    framings = args.framings.split(",")
    server_cpu, client_cpu = pin_client()
    ensure_wrk(log)
    under_test = servers(args, server_cpu)
    cells = [{"size": s, "framing": f, "conns": c, "mbs": {}} for f in framings for c in conns
             for s in sizes]
    try:
        for server in under_test:
            server.start()
        for size in sizes:
            body = body_of(size)
            requests = {f: request_of(body, f == "chunked") for f in framings}
            for cell in (c for c in cells if c["size"] == size):
                request = requests[cell["framing"]]
                seconds = args.seconds * (2 if size >= 16 * MIB else 1)
                for round_ in range(args.rounds):
                    # the order turns round each round: a server measured right after another
                    # finds the pages that one freed, and fresh pages are slow to fault in here
                    for server in under_test[::-1] if round_ % 2 else under_test:
                        if server.key in ("reference", "sink") and cell["framing"] == "chunked":
                            continue   # Flask on uvicorn's WSGI bridge reads a chunked body as empty
                        try:
                            used = cpu_seconds(server.proc.pid)
                            mbs, done = load(server.port, request, size, cell["conns"], seconds,
                                             client_cpu)
                            used = cpu_seconds(server.proc.pid) - used
                        except RuntimeError as exc:
                            log(f"[{server.key}] {label_of(size)}: {exc}")
                            continue
                        cell["mbs"][server.key] = max(mbs, cell["mbs"].get(server.key, 0))
                        if used > 0 and done:   # MB per second of the server's own CPU time
                            per_cpu = done * size / 1e6 / used
                            cell.setdefault("mb_per_cpu_s", {})
                            cell["mb_per_cpu_s"][server.key] = max(
                                per_cpu, cell["mb_per_cpu_s"].get(server.key, 0))
                log(f"{label_of(size):>14} {cell['framing']:>14} {cell['conns']}c  " + "  ".join(
                    f"{s.key} {cell['mbs'].get(s.key, 0):7.0f}" for s in under_test))
    finally:
        for server in under_test:
            server.stop()
    doc = {"command": " ".join(["python", "bench/ingest.py", *(argv or sys.argv[1:])]),
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
           "servers": [s.key for s in under_test], "labels": {s.key: s.label for s in under_test},
           "conns": conns, "cells": cells}
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = render(doc)
    (args.out / "ingest.json").write_text(json.dumps(doc, indent=1) + "\n")
    (args.out / "ingest.md").write_text(markdown)
    chart(args.out / "ingest.json", args.out / "ingest.png")
    log(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
