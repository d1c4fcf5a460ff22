#!/usr/bin/env python3
"""End-to-end benchmark of lite_serving against openbayes-serving and a raw uvicorn app.

    python bench/run.py            # full run (~10 minutes on 2 cores)
    python bench/run.py --quick    # smoke run: 1 round, 2 s per load, fewer scenarios

Builds what it needs under bench/.venvs and bench/.work, then writes
bench/results/results.{md,json} and chart.png. See bench/README.md.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import report  # noqa: E402
from harness.catalog import METRICS, SCENARIOS, WORKER_COUNTS, WORKERS_METRICS, workers_column  # noqa: E402
from harness.envs import (  # noqa: E402
    ENV_SPECS,
    EnvError,
    EnvSpec,  # noqa: E402
    ensure_env,
    installed_versions,
)
from harness.fixtures import build_onnx_model, write_bodies, write_tls_certificate  # noqa: E402
from harness.machine import cpu_layout, machine_info  # noqa: E402
from harness.paths import RESULTS_DIR, TOOLS_DIR, WORK_DIR  # noqa: E402
from harness.scenarios import Bench, Settings, run_app_scenarios, run_cold_starts, run_workers  # noqa: E402
from harness.servers import SERVERS, LiteServer  # noqa: E402
from harness.wrk import ensure_wrk, wrk_version  # noqa: E402

QUICK_SCENARIOS = ("echo", "msgpack", "coldstart")
BUSY_FRACTION = 0.1  # CPU use by other work, before the run, above which the results get a warning


def log(text=""):
    print(text, flush=True)


def csv_choice(allowed):
    """argparse type for a comma-separated subset of ``allowed``."""

    def parse(text):
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        unknown = [x for x in items if x not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}"
            )
        return items

    return parse


def add_subset(p, flag, allowed, everything=True):
    """``flag`` takes a comma-separated subset of ``allowed``; without it, all of them
    (``everything``) or None."""
    allowed = tuple(allowed)
    p.add_argument(flag, type=csv_choice(allowed), default=allowed if everything else None,
                   help="subset of " + ",".join(allowed))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, 2 s loads, " + ", ".join(QUICK_SCENARIOS)
    )
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 8, quick 2)")
    p.add_argument("--rounds", type=int, help="rounds of every server taking its turn (default 3, quick 1)")
    p.add_argument("--cold-starts", type=int, help="measured starts per server (default 5, quick 2)")
    add_subset(p, "--servers", SERVERS)
    add_subset(p, "--scenarios", SCENARIOS, everything=False)
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory (default bench/results)")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run lite_serving at git commit REV (column lite-base, from a worktree under "
        "bench/.work), for an A/B run of a change",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="cold starts under SCHED_FIFO (needs root): other work on the machine cannot take the CPU "
        "from a starting server, so wall time is close to its CPU time",
    )
    return p.parse_args(argv)


def add_baseline(rev):
    """The server ``lite-base``: lite_serving at commit ``rev``, installed in a venv of its own."""
    tree = WORK_DIR / f"baseline-{rev}"
    if not tree.exists():
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], check=True,
                       stdout=subprocess.DEVNULL)
    ENV_SPECS["lite-base"] = EnvSpec("lite-base", ("onnxruntime", "numpy"), tree,
                                     purpose=f"lite_serving at {rev}")
    SERVERS["lite-base"] = LiteServer("lite-base", f"lite at {rev}", "lite-base",
                                      supports_workers=True, log_facts=(r"parser: .+",))


def settings_from(args):
    """Settings from the flags; explicit flags win over --quick's defaults."""
    quick = args.quick

    def pick(value, full, smoke):
        return value if value is not None else (smoke if quick else full)

    return Settings(
        rounds=pick(args.rounds, 3, 1),
        duration=pick(args.duration, 8, 2),
        warmup=1,
        cold_starts=pick(args.cold_starts, 5, 2),
        servers=args.servers,
        scenarios=pick(args.scenarios, SCENARIOS, QUICK_SCENARIOS),
        realtime=args.realtime,
    )


def prepare_envs(settings):
    """Build the tools venv and each selected server's venv; return ``(tools python, {server: python})``.

    A server whose venv cannot be built is left out with a message; the tools venv is required.
    """
    tools = ensure_env(ENV_SPECS["tools"], log)
    pythons, failed_envs = {}, {}
    for key in settings.servers:
        env = SERVERS[key].env
        if env in failed_envs:
            continue
        try:
            pythons[key] = ensure_env(ENV_SPECS[env], log)
        except EnvError as e:
            failed_envs[env] = str(e)
            log(f"[setup] SKIPPING servers of venv {env!r}: {str(e).splitlines()[0]}")
            log("\n".join("        " + line for line in str(e).splitlines()[1:]))
    return tools, pythons, failed_envs


def run_scenarios(bench):
    started = time.monotonic()
    scenarios = bench.settings.scenarios
    run_app_scenarios(bench)
    if "coldstart" in scenarios:
        run_cold_starts(bench)
    if "workers" in scenarios:
        run_workers(bench)
    log(f"[done] measured in {time.monotonic() - started:.0f} s")


def results_document(bench, machine, failed_envs, command):
    """The results.json document."""
    envs = sorted({SERVERS[k].env for k in bench.settings.servers} | {"tools"})
    versions = {env: installed_versions(ENV_SPECS[env]) if env not in failed_envs else {} for env in envs}
    for env, error in failed_envs.items():
        bench.results.note(
            f"venv {env!r} could not be built, its servers were skipped: {error.splitlines()[0]}"
        )
    columns = [k for k in SERVERS if k in bench.settings.servers]
    worker_columns = [workers_column(n) for n in WORKER_COUNTS]
    return {
        "command": command,
        "machine": machine,
        "settings": asdict(bench.settings),
        "columns": columns,
        "worker_columns": worker_columns,
        "labels": {k: SERVERS[k].label for k in columns} | {c: c for c in worker_columns},
        "versions": versions,
        "metrics": [asdict(m) for m in METRICS],
        "workers_metrics": [asdict(m) for m in WORKERS_METRICS],
        "importtime": bench.importtime,
        **bench.results.to_json(),
    }


def write_outputs(
    data, out_dir, tools_python, render=report.render, names=("results.json", "results.md", "chart.png")
):
    """Write the document ``data`` as JSON, as markdown (``render``) and as a chart, under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out_dir / name for name in names)
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    md_path.write_text(render(data))
    chart = subprocess.run([str(tools_python), str(TOOLS_DIR / "chart.py"), str(json_path), str(png_path)])
    log(
        f"[done] wrote {md_path}, {json_path}"
        + (f", {png_path}" if chart.returncode == 0 else " (chart FAILED)")
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.baseline:
        add_baseline(args.baseline)
        args.servers = (*args.servers, "lite-base")
    settings = settings_from(args)
    command = shlex.join(["python", "bench/run.py", *argv])
    ensure_wrk(log)
    tools_python, pythons, failed_envs = prepare_envs(settings)
    cpus = cpu_layout()
    os.sched_setaffinity(
        0, {int(cpus[1])}
    )  # keep the harness (and its start-up polling) off the server's CPU
    write_bodies()
    if "onnx" in settings.scenarios:
        build_onnx_model(tools_python)
    if "tls" in settings.scenarios:
        write_tls_certificate()
    bench = Bench(settings, pythons, cpus, log=log)
    machine = {**machine_info(wrk_version()), "server_cpus": cpus[0], "client_cpus": cpus[1]}
    busy = machine["busy_at_start"] or 0
    if busy > BUSY_FRACTION:
        bench.results.note(
            f"other work was using {busy:.0%} of the CPUs just before the run: numbers are noisier"
        )
    log(
        f"[run] servers {', '.join(pythons)}; scenarios {', '.join(settings.scenarios)}; "
        f"{settings.rounds} round(s) x {settings.duration} s; server CPU {cpus[0]}, wrk CPU {cpus[1]}; "
        f"CPUs {busy:.0%} busy before the run"
    )
    run_scenarios(bench)
    write_outputs(results_document(bench, machine, failed_envs, command), args.out, tools_python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
