#!/usr/bin/env python3
"""Batching benchmark: lite_serving batched and unbatched, LitServe with and without its
batching, and the reference, on a real model (all-MiniLM-L6-v2, int8 ONNX) and a tiny one,
next to onnxruntime alone.

    python bench/batching.py            # 3 rounds, 8 s per load (about 25 minutes on 2 cores)
    python bench/batching.py --quick    # smoke run: 1 round, 2 s per load

Builds what it needs under bench/.venvs and bench/.work (the first build takes a few
minutes), then writes bench/results/batching.{md,json} and batching.png. See bench/README.md.
"""

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import batch_report  # noqa: E402
from harness.batch_catalog import COLUMN_KEYS, MODELS, columns, metrics  # noqa: E402
from harness.batch_fixtures import FixtureError, build_minilm, build_mlp, model_answers  # noqa: E402
from harness.batch_scenario import BatchBench, BatchSettings, run_rounds  # noqa: E402
from harness.envs import ENV_SPECS, EnvError, ensure_env, installed_versions  # noqa: E402
from harness.machine import cpu_layout, machine_info  # noqa: E402
from harness.paths import RESULTS_DIR  # noqa: E402
from harness.wrk import ensure_wrk, wrk_version  # noqa: E402
from run import add_subset, log, write_outputs  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s per load")
    p.add_argument(
        "--duration", type=int, help="seconds per wrk run and per model-only run (default 8, quick 2)"
    )
    p.add_argument("--rounds", type=int, help="rounds of every server taking its turn (default 3, quick 1)")
    add_subset(p, "--models", MODELS)
    add_subset(p, "--servers", COLUMN_KEYS)
    p.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="largest batch of every batched server and of the ceiling (default 16)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="onnxruntime intra-op threads everywhere (default 1)"
    )
    p.add_argument("--lite-delay", type=float, default=0.0, help="lite's --max-batch-delay in ms (default 0)")
    p.add_argument(
        "--litserve-timeout",
        type=float,
        default=0.005,
        help="batch_timeout (s) of the tuned LitServe column (default 0.005)",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory (default bench/results)")
    args = p.parse_args(argv)
    for name in ("batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.lite_delay < 0 or args.litserve_timeout < 0:
        p.error("delays and timeouts cannot be negative")
    return args


def settings_from(args):
    """Settings from the flags; explicit flags win over --quick's defaults."""

    def pick(value, full, smoke):
        return value if value is not None else (smoke if args.quick else full)

    return BatchSettings(
        rounds=pick(args.rounds, 3, 1),
        duration=pick(args.duration, 8, 2),
        models=args.models,
        servers=args.servers,
        batch_size=args.batch_size,
        threads=args.threads,
        lite_delay_ms=args.lite_delay,
        litserve_timeout_s=args.litserve_timeout,
    )


def lite_batching_missing(python, spec):
    """Why this lite_serving cannot run a batched column, or None when its options include batching."""
    _, cwd = spec.command(spec.apps[0], 0)
    try:
        proc = subprocess.run(
            [str(python), "-m", "lite_serving", str(cwd), "--help"],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return "`python -m lite_serving DIR --help` did not finish"
    text = proc.stdout + proc.stderr
    absent = [flag for flag in ("--max-batch-size", "--max-batch-delay") if flag not in text]
    if absent:
        return f"this lite_serving has no batcher yet (its --help lists no {' or '.join(absent)})"
    return None


def prepare(settings, specs):
    """Build the venvs, models, bodies and model-only answers.

    Returns ``(bench, {venv: error} of venvs that failed, the MiniLM export report, tools python)``;
    a server venv that fails only skips its columns, anything else raises FixtureError.
    """
    pythons, failed = {}, {}
    for env in ["lite"] + sorted({spec.env for spec in specs.values()} - {"lite"}):
        try:
            python = ensure_env(ENV_SPECS[env], log)
        except EnvError as e:
            failed[env] = str(e)
            log(f"[setup] venv {env!r} could not be built: {str(e).splitlines()[0]}")
            continue
        pythons.update({key: python for key, spec in specs.items() if spec.env == env})
    if "lite" in failed:
        raise FixtureError("the lite venv (which also runs the model-only measurement) could not be built")
    model_python = ENV_SPECS["lite"].python
    try:
        tools_python = ensure_env(ENV_SPECS["tools"], log)
        export_python = ensure_env(ENV_SPECS["export"], log) if "minilm" in settings.models else None
    except EnvError as e:
        raise FixtureError(str(e)) from None
    export = {}
    if export_python:
        export = build_minilm(export_python, log)
    if "mlp" in settings.models:
        build_mlp(tools_python)
    answers = {model: model_answers(model_python, model) for model in settings.models}
    bench = BatchBench(settings, specs, pythons, model_python, answers, cpu_layout(), log=log)
    for key, spec in specs.items():
        if spec.needs_batcher and key in pythons:
            reason = lite_batching_missing(pythons[key], spec)
            for model in settings.models if reason else ():
                bench.skip(key, model, reason)
    for env, error in failed.items():
        for key in (k for k, spec in specs.items() if spec.env == env):
            for model in settings.models:
                bench.skip(key, model, f"venv {env!r} could not be built: {error.splitlines()[0]}")
    return bench, failed, export, tools_python


def results_document(bench, machine, failed, export, command):
    s = bench.settings
    specs = bench.specs
    envs = sorted(
        {spec.env for spec in specs.values()} | {"lite", "tools"} | ({"export"} if export else set())
    )
    versions = {env: installed_versions(ENV_SPECS[env]) if env not in failed else {} for env in envs}
    ort_versions = {
        v.get("onnxruntime") for env, v in versions.items() if env != "tools" and v.get("onnxruntime")
    }
    if len(ort_versions) > 1:
        bench.results.note(f"the venvs run different onnxruntime versions: {', '.join(sorted(ort_versions))}")
    return {
        "title": "lite_serving batching benchmark",
        "command": command,
        "machine": machine,
        "settings": asdict(s),
        "columns": list(specs),
        "worker_columns": [],
        "extra_columns": ["model-only"],
        "labels": {key: spec.label for key, spec in specs.items()}
        | {"model-only": "model only (onnxruntime)"},
        "versions": versions,
        "export": export,
        "metrics": [asdict(m) for m in metrics(s.models, s.batch_size)],
        "workers_metrics": [],
        "skipped": [{"column": c, "model": m, "reason": r} for (c, m), r in bench.skipped.items()],
        **bench.results.to_json(),
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = settings_from(args)
    command = shlex.join(["python", "bench/batching.py", *argv])
    all_specs = columns(
        settings.batch_size, settings.threads, settings.lite_delay_ms, settings.litserve_timeout_s
    )
    specs = {key: spec for key, spec in all_specs.items() if key in settings.servers}
    ensure_wrk(log)
    started = time.monotonic()
    try:
        bench, failed, export, tools_python = prepare(settings, specs)
    except FixtureError as e:
        log(f"[setup] {e}")
        return 1
    setup_s = time.monotonic() - started
    log(f"[setup] ready in {setup_s:.0f} s")
    cpus = bench.cpus
    os.sched_setaffinity(0, {int(cpus[1])})  # keep the harness off the servers' CPU
    machine = {**machine_info(wrk_version()), "server_cpus": cpus[0], "client_cpus": cpus[1]}
    log(
        f"[run] {', '.join(specs)}; models {', '.join(settings.models)}; {settings.rounds} round(s) x "
        f"{settings.duration} s; batch size {settings.batch_size}, {settings.threads} thread(s); "
        f"server CPU {cpus[0]}, wrk CPU {cpus[1]}; CPUs {machine['busy_at_start'] or 0:.0%} busy before the run"
    )
    started = time.monotonic()
    run_rounds(bench)
    log(f"[done] measured in {time.monotonic() - started:.0f} s")
    data = results_document(bench, machine, failed, export, command)
    names = ("batching.json", "batching.md", "batching.png")
    write_outputs({**data, "setup_s": setup_s}, args.out, tools_python, batch_report.render, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
