"""Running the batching scenario: servers take turns per round and model; the model-only ceiling too."""

import http.client
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

from .batch_catalog import (
    BATCH_SERVERS,
    CONNECTIONS,
    MODEL_ONLY,
    MODELS,
    answers_cell,
    load_cell,
    model_only_cell,
)
from .batch_fixtures import answer_difference
from .cpuwatch import NOISY_SHARE, ForeignCpu
from .results import Results
from .servers import HOST, ServerStartError, post, start_server
from .settings import RoundSettings
from .wrk import WrkError, run_wrk

WARMUP_CONNECTIONS = 32
_BATCH_HISTOGRAM = re.compile(r"^(\w*batch_size\w*)_(sum|count)(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


@dataclass
class BatchSettings(RoundSettings):
    """What to run; filled from the command line by batching.py."""

    models: tuple = tuple(MODELS)
    servers: tuple = ()
    batch_size: int = 16
    threads: int = 1
    lite_delay_ms: float = 0.0
    litserve_timeout_s: float = 0.005
    start_timeout: float = 120.0


@dataclass
class BatchBench:
    """State shared by the runners: the columns, their interpreters, the expected answers, the results."""

    settings: BatchSettings
    specs: dict  # column key -> BatchServer, only the selected ones
    pythons: dict  # column key -> interpreter of its venv (columns that can run)
    model_python: object  # the interpreter that runs model_only.py (the lite venv)
    answers: dict  # model -> [answer to the load body, answers to the check bodies...]
    cpus: tuple
    results: Results = field(default_factory=Results)
    skipped: dict = field(default_factory=dict)  # (column, model) -> why it is not measured
    log: object = print

    def skip(self, column, model, reason, rnd=None):
        """Stop trying ``column`` on ``model``; the report gives ``reason``."""
        first = reason.splitlines()[0]
        if (column, model) not in self.skipped:
            self.skipped[(column, model)] = first
            self.log(f"  !! {column} ({model}) skipped: {first}")
            if len(reason.splitlines()) > 1:
                self.log("\n".join("     " + line for line in reason.splitlines()[1:]))


def run_rounds(bench):
    """Every round: per model, the model-only ceiling, then each column in turn."""
    s = bench.settings
    for rnd in range(1, s.rounds + 1):
        for model in s.models:
            bench.log(f"[round {rnd}/{s.rounds}] {MODELS[model].title}")
            measure_model_only(bench, model, rnd)
            for key, spec in bench.specs.items():
                if key in bench.pythons and (key, model) not in bench.skipped:
                    run_session(bench, spec, model, rnd)


def measure_model_only(bench, model, rnd):
    """onnxruntime alone, pinned to the servers' core: batch of ``batch_size`` and batch of one."""
    s = bench.settings
    cmd = [
        "taskset", "-c", bench.cpus[0], str(bench.model_python), "model_only.py", "ceiling",
        str(MODELS[model].path), str(MODELS[model].load_body.path),
        "--batch", str(s.batch_size), "--threads", str(s.threads), "--seconds", str(s.duration),
    ]  # fmt: skip
    with ForeignCpu(()) as foreign:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=BATCH_SERVERS)
    cell = model_only_cell(model)
    if proc.returncode != 0:
        bench.results.add(cell, MODEL_ONLY, rnd, error=f"model_only.py failed: {proc.stderr.strip()[-300:]}")
        bench.log(f"  !! model only failed: {proc.stderr.strip()[-300:]}")
        return
    out = json.loads(proc.stdout)
    values = {
        "rps": out["batch_samples_s"],
        "rps_b1": out["single_samples_s"],
        "batch_ms": out["batch_call_ms"],
        "single_ms": out["single_call_ms"],
        "foreign_cpu": foreign.share,
    }
    bench.results.add(cell, MODEL_ONLY, rnd, values)
    bench.log(
        f"  {MODEL_ONLY:<24} batch {s.batch_size}: {values['rps']:9.1f} samples/s "
        f"({values['batch_ms']:.2f} ms a call); "
        f"batch 1: {values['rps_b1']:9.1f} samples/s ({values['single_ms']:.2f} ms a call)"
    )


def run_session(bench, spec, model, rnd):
    """Start the server, check its answers, warm it up, run the loads, stop it."""
    try:
        server = start_server(
            spec, bench.pythons[spec.key], model, bench.cpus[0], None, bench.settings.start_timeout
        )
    except ServerStartError as e:
        bench.skip(spec.key, model, f"did not start: {e}")
        return
    try:
        problem = check_answers(bench, server, spec, model, rnd)
        if problem:
            bench.skip(spec.key, model, f"answered wrongly: {problem}")
            return
        body = MODELS[model].load_body
        if bench.settings.warmup:
            try:
                run_wrk(url(server, spec), body, WARMUP_CONNECTIONS, bench.settings.warmup, bench.cpus[1])
            except WrkError as e:
                bench.log(f"  warm-up failed: {e}")
        for connections in CONNECTIONS:
            measure_load(bench, server, spec, model, connections, rnd)
    finally:
        server.stop()


def url(server, spec):
    return f"http://{HOST}:{server.port}{spec.predict_path}"


def _post_json(server, spec, body, timeout):
    """``(status, decoded answer or None, problem or None)`` for one POST of ``body``."""
    try:
        status, response = post(server.port, body.read(), body.content_type, timeout, spec.predict_path)
    except (OSError, http.client.HTTPException) as e:
        return None, None, f"request failed: {e!r}"
    if status != 200:
        return status, None, f"status {status}: {response[:200]!r}"
    try:
        return status, json.loads(response), None
    except ValueError:
        return status, None, f"answer is not JSON: {response[:200]!r}"


def _first_answer(bench, server, spec, model):
    """The load body's answer, asked again while the server says 503 (lite binds before it loads)."""
    deadline = time.perf_counter() + bench.settings.start_timeout
    body = MODELS[model].load_body
    while True:
        status, answer, problem = _post_json(server, spec, body, bench.settings.start_timeout)
        if status != 503 or server.proc.poll() is not None or time.perf_counter() > deadline:
            return answer, problem
        time.sleep(0.05)


def check_answers(bench, server, spec, model, rnd):
    """Compare the answer to the load body, sent alone, then to the check bodies, sent at once,
    with the model-only answers; return what is wrong, or None. The largest differences are recorded.
    """
    expected = bench.answers[model]
    distance, tolerance = MODELS[model].distance, MODELS[model].tolerance
    answer, problem = _first_answer(bench, server, spec, model)
    if problem:
        return problem
    alone = answer_difference(answer, expected[0], distance)
    if alone is None or alone > tolerance:
        return (
            f"{_diff_text(alone)} from the model-only answer ({distance} tolerance {tolerance:g}): "
            f"{json.dumps(answer)[:200]}"
        )
    bodies = MODELS[model].check_bodies
    got = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def ask(i):
        start.wait()
        got[i] = _post_json(server, spec, bodies[i], 60.0)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    together = 0.0
    for i, (_, answer, problem) in enumerate(got):
        which = f"check request {i} sent with {len(bodies) - 1} others"
        if problem:
            return f"{which}: {problem}"
        diff = answer_difference(answer, expected[i + 1], distance)
        if diff is None or diff > tolerance:
            return (
                f"{which}: {_diff_text(diff)} from its model-only answer ({distance} tolerance {tolerance:g})"
            )
        together = max(together, diff)
    bench.results.add(answers_cell(model), spec.key, rnd, {"alone": alone, "together": together})
    return None


def _diff_text(diff):
    return "a different shape" if diff is None else f"{diff:.3g} away"


def batch_histogram(server):
    """``(sum, count)`` of the batch-size histogram in lite's /metrics, or None when it has none."""
    try:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode("utf-8", "replace")
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    totals = {}
    for _, kind, value in _BATCH_HISTOGRAM.findall(text):
        totals[kind] = totals.get(kind, 0.0) + float(value)
    return (totals["sum"], totals["count"]) if {"sum", "count"} <= totals.keys() else None


def measure_load(bench, server, spec, model, connections, rnd):
    """One wrk run; non-2xx answers or socket errors make it a failed sample."""
    cell = load_cell(model, connections)
    before = batch_histogram(server) if spec.reads_batch_metrics else None
    if spec.reads_batch_metrics and before is None:
        bench.results.note(f"{spec.label}: /metrics shows no batch-size histogram, so no mean batch size")
    try:
        with ForeignCpu(server.pids()) as foreign:
            r = run_wrk(
                url(server, spec),
                MODELS[model].load_body,
                connections,
                bench.settings.duration,
                bench.cpus[1],
            )
    except (WrkError, subprocess.TimeoutExpired) as e:
        bench.results.add(cell, spec.key, rnd, error=str(e).splitlines()[0])
        bench.log(f"  !! {spec.key}: {connections} conn: {str(e).splitlines()[0]}")
        return
    values = {
        "rps": r.rps,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
        "requests": r.requests,
        "foreign_cpu": foreign.share,
    }
    after = batch_histogram(server) if before else None
    if after and after[1] > before[1]:
        values["mean_batch"] = (after[0] - before[0]) / (after[1] - before[1])
    problems = "; ".join(r.problems()) or None
    bench.results.add(cell, spec.key, rnd, values, problems)
    status = f"  other work {foreign.share:.0%} CPU" if foreign.share >= NOISY_SHARE else ""
    status += f"  mean batch {values['mean_batch']:.1f}" if "mean_batch" in values else ""
    status += f"  FAILED: {problems}" if problems else ""
    bench.log(
        f"  {spec.key:<24} {connections:>3} conn {r.rps:>9.1f} req/s  "
        f"p50 {r.p50_ms:8.2f} ms  p99 {r.p99_ms:8.2f} ms{status}"
    )
