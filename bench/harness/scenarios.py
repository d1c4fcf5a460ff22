"""Running the scenarios: servers take turns (A B C A B C ...) so drift hits all alike."""

import contextlib
import http.client
import os
import random
import subprocess
import time
from dataclasses import dataclass, field

from .catalog import (
    APP_SCENARIOS,
    COLDSTART_CELL,
    LOADS,
    WORKER_COUNTS,
    WORKERS_LOAD,
    rss_cell,
    workers_column,
)
from .cpuwatch import NOISY_SHARE, ForeignCpu
from .fixtures import APP_LOADS, BODIES
from .importtime import parse_importtime
from .results import Results
from .servers import SERVERS, ServerStartError, post, spawn_server, start_server
from .settings import RoundSettings
from .wrk import WrkError, run_wrk

WARMUP_CONNECTIONS = 32
READY_POLL_S = 0.001
IMPORT_PROFILE_STARTS = 3  # -X importtime starts per server; the profile is their median


@dataclass
class Settings(RoundSettings):
    """What to run; filled from the command line by run.py."""

    cold_starts: int = 5
    servers: tuple = tuple(SERVERS)
    scenarios: tuple = ()
    start_timeout: float = 60.0
    realtime: bool = False  # cold starts under SCHED_FIFO, sheltered from other work on the machine


@dataclass
class Bench:
    """State shared by the scenario runners."""

    settings: Settings
    pythons: dict  # server key -> interpreter of its venv (only servers that can run)
    cpus: tuple  # (server cpus, client cpus, all cpus) as taskset lists
    results: Results = field(default_factory=Results)
    broken: dict = field(default_factory=dict)  # (column, app) -> why it is no longer tried
    log: object = print
    importtime: dict = field(default_factory=dict)  # column -> -X importtime profile of a cold start

    def servers_for(self, app, cold_start=False):
        """Selected, installed servers that can serve ``app``, in column order.

        Servers that are only another way of starting one (``cold_start_only``) are
        included only for the cold start.
        """
        return [
            SERVERS[k]
            for k in self.settings.servers
            if k in self.pythons and app in SERVERS[k].apps and (cold_start or not SERVERS[k].cold_start_only)
        ]

    def fail(self, cells, column, rnd, reason, permanent=False):
        """Record a failed attempt for every cell in ``cells``."""
        first_line = reason.splitlines()[0]
        self.log(f"  !! {column}: {first_line}")
        for cell in cells:
            self.results.add(cell, column, rnd, error=first_line)
        if permanent:
            self.log("\n".join("     " + line for line in reason.splitlines()[1:]))


@dataclass(frozen=True)
class Session:
    """One server process serving one app through a list of loads."""

    column: str
    app: str
    loads: tuple
    rss_cell: str
    workers: int = None
    pinned: bool = True

    @property
    def cells(self):
        return [load.cell for load in self.loads] + [self.rss_cell]


def run_app_scenarios(bench):
    """The echo / msgpack / onnx scenarios, every selected server once per round."""
    apps = [app for app in APP_SCENARIOS if app in bench.settings.scenarios]
    for rnd in range(1, bench.settings.rounds + 1):
        for app in apps:
            bench.log(f"[round {rnd}/{bench.settings.rounds}] {app}")
            for spec in bench.servers_for(app):
                run_session(bench, spec, Session(spec.key, app, LOADS[app], rss_cell(app)), rnd)


def run_session(bench, spec, session, rnd):
    """Start the server, check one answer, warm up, run each load, read RSS, stop."""
    key = (session.column, session.app)
    if key in bench.broken:
        return
    server_cpus, client_cpus, all_cpus = bench.cpus
    if not session.pinned:
        server_cpus = client_cpus = all_cpus
    try:
        server = start_server(
            spec,
            bench.pythons[spec.key],
            session.app,
            server_cpus,
            session.workers,
            bench.settings.start_timeout,
        )
    except ServerStartError as e:
        bench.broken[key] = str(e).splitlines()[0]
        bench.results.note(
            f"{session.column} could not serve {session.app}: {bench.broken[key]} (not retried)"
        )
        bench.fail(session.cells, session.column, rnd, str(e), permanent=True)
        return
    for fact in server.log_facts():
        bench.results.note(f"{session.column} log says: {fact}")
    try:
        _measure_session(bench, server, session, rnd, client_cpus)
    finally:
        server.stop()


def check_answer(server, app):
    """``(status, problem)`` for one request of ``app``; ``problem`` is None for a correct answer."""
    load_spec = APP_LOADS[app]
    body = BODIES[load_spec.body]
    try:
        status, response = post(server.port, body.read(), body.content_type, tls=server.tls)
    except (OSError, http.client.HTTPException) as e:
        return None, f"request failed: {e!r}"
    return status, load_spec.check(status, response)


def await_correct_answer(server, app, timeout):
    """Repeat the check request while the server answers 503 (still loading); return its problem or None.

    A server may answer ``GET /`` before its predictor is built (lite_serving does);
    this waits until it can actually predict.
    """
    deadline = time.perf_counter() + timeout
    while True:
        status, problem = check_answer(server, app)
        if problem is None or status != 503 or time.perf_counter() > deadline:
            return problem
        time.sleep(READY_POLL_S)


def _measure_session(bench, server, session, rnd, client_cpus):
    body = BODIES[APP_LOADS[session.app].body]
    problem = await_correct_answer(server, session.app, bench.settings.start_timeout)
    if problem:
        bench.broken[(session.column, session.app)] = problem
        bench.results.note(f"{session.column} answered {session.app} wrongly: {problem} (not retried)")
        bench.fail(session.cells, session.column, rnd, f"wrong answer: {problem}")
        return
    if bench.settings.warmup:
        connections = min(WARMUP_CONNECTIONS, max(load.connections for load in session.loads))
        try:
            run_wrk(server.url, body, connections, bench.settings.warmup, client_cpus)
        except WrkError as e:
            bench.log(f"  warm-up failed: {e}")
    for load in session.loads:
        measure_load(bench, server, load, session.column, rnd, client_cpus)
    if server.proc.poll() is not None:
        bench.fail(
            [session.rss_cell], session.column, rnd, f"server exited with code {server.proc.returncode}"
        )
        return
    rss, processes = server.rss_mib(), server.process_count()
    bench.results.add(session.rss_cell, session.column, rnd, {"mib": rss, "processes": processes})
    if session.workers and processes < session.workers:
        bench.results.note(
            f"{session.column} ran as {processes} process{'es' if processes > 1 else ''}: "
            "the flag was accepted but no more worker processes appeared"
        )
    bench.log(f"  {session.column:<20} RSS after load {rss:.1f} MiB")


def measure_load(bench, server, load, column, rnd, client_cpus):
    """One wrk run; a run with non-2xx answers or socket errors is recorded as failed."""
    body = BODIES[APP_LOADS[load.app].body]
    try:
        with ForeignCpu(server.pids()) as foreign:
            r = run_wrk(server.url, body, load.connections, bench.settings.duration, client_cpus,
                        accept=load.accept, close=load.new_connection)
    except (WrkError, subprocess.TimeoutExpired) as e:
        bench.fail([load.cell], column, rnd, f"{load.title}: {e}")
        return
    values = {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "requests": r.requests}
    values["mb_s"] = r.rps * body.size / 1e6
    values["foreign_cpu"] = foreign.share
    problems = "; ".join(r.problems()) or None
    bench.results.add(load.cell, column, rnd, values, problems)
    status = f"  other work {foreign.share:.0%} CPU" if foreign.share >= NOISY_SHARE else ""
    status += f"  FAILED: {problems}" if problems else ""
    bench.log(
        f"  {column:<20} {load.title:<24} {r.rps:>9.1f} req/s  p50 {r.p50_ms:8.2f} ms  p99 {r.p99_ms:8.2f} ms{status}"
    )


def run_cold_starts(bench):
    """Spawn-to-first-answer times of the echo app, servers taking turns; start 0 is discarded.

    Each start is polled with the predict request itself (a refused connection or a
    503 means "not yet"), so what is measured is what a first user waits for. Two
    figures per start: wall time from the spawn to the first correct answer, and the
    CPU time the server's threads had used by then (less sensitive to other work on
    the machine). The discarded first start of each server warms the .pyc files and
    the page cache, so what is measured is a restart on a machine that has run the
    server before. Last, one more start of each with ``-X importtime`` lists where
    its imports spend their time.
    """
    specs = bench.servers_for("echo", cold_start=True)
    bench.log(f"[cold start] {bench.settings.cold_starts} measured starts per server (+1 discarded)")
    with _realtime(bench):
        _cold_start_rounds(bench, specs)


def _cold_start_rounds(bench, specs):
    for attempt in range(bench.settings.cold_starts + 1):
        # A start runs a few percent slower right after another server's start than right
        # after its own (CPU caches): the order is shuffled anew for every attempt (seeded,
        # so runs are repeatable), so that no server always follows the same one.
        order = list(specs)
        random.Random(attempt).shuffle(order)
        for spec in order:
            outcome = _cold_start(bench, spec, attempt)
            if outcome is None or not attempt:
                continue
            values, problem, _log = outcome
            bench.results.add(COLDSTART_CELL, spec.key, attempt, values, problem)
            bench.log(
                f"  {spec.key:<20} first predict answered after {values['predict_ms']:7.1f} ms, "
                f"{values['cpu_ms']:6.1f} ms of server CPU"
            )
    for spec in specs:
        profile = _import_profile(bench, spec)
        if profile:
            bench.importtime[spec.key] = profile
            bench.log(
                f"  {spec.key:<20} imports: {profile['total_ms']:.1f} ms over {profile['modules']} modules "
                f"(-X importtime, median of {profile['starts']} starts)"
            )


@contextlib.contextmanager
def _realtime(bench):
    """With ``--realtime``: the harness polls under SCHED_FIFO too (below the servers' priority)."""
    if not bench.settings.realtime:
        yield
        return
    try:
        previous = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(40))
    except (AttributeError, OSError) as e:
        bench.settings.realtime = False
        bench.results.note(f"--realtime was asked for but is not allowed here ({e}); cold starts ran "
                           "under the normal scheduler")
        yield
        return
    bench.results.note("cold starts ran under SCHED_FIFO (--realtime): servers at priority "
                       "50, the harness at 40, so other work on the machine did not take their CPU")
    try:
        yield
    finally:
        os.sched_setscheduler(0, previous[0], previous[1])


def _cold_start(bench, spec, attempt, extra_env=None):
    """One start: ``(values, problem, log path)``, or None when the server could not be started."""
    if (spec.key, "echo") in bench.broken:
        return None
    try:
        server = spawn_server(spec, bench.pythons[spec.key], "echo", bench.cpus[0], extra_env=extra_env,
                              realtime=bench.settings.realtime)
    except ServerStartError as e:
        bench.broken[(spec.key, "echo")] = str(e).splitlines()[0]
        bench.fail([COLDSTART_CELL], spec.key, attempt, str(e), permanent=True)
        return None
    try:
        seconds, problem = await_first_answer(server, "echo", bench.settings.start_timeout)
        cpu = server.cpu_seconds()
    finally:
        server.stop()
    if seconds is None:
        bench.broken[(spec.key, "echo")] = problem
        bench.fail([COLDSTART_CELL], spec.key, attempt, problem, permanent=True)
        return None
    return {"predict_ms": seconds * 1000, "cpu_ms": cpu * 1000}, problem, server.log_path


def await_first_answer(server, app, timeout):
    """Ask the check request from the spawn on, until it is answered other than 503.

    Returns ``(seconds from spawn, problem)``: ``problem`` is None for a correct
    answer; ``seconds`` is None when the server exited or never answered.
    """
    while True:
        status, problem = check_answer(server, app)
        elapsed = time.perf_counter() - server.started
        if status is not None and status != 503:
            return elapsed, problem
        if server.proc.poll() is not None:
            return None, f"exited with code {server.proc.returncode} before answering"
        if elapsed > timeout:
            return None, f"no answer to predict within {timeout:.0f} s"
        time.sleep(READY_POLL_S)


def _import_profile(bench, spec, starts=IMPORT_PROFILE_STARTS):
    """A few more starts with ``-X importtime`` (PYTHONPROFILEIMPORTTIME); their parsed profile."""
    logs = []
    for _ in range(starts):
        outcome = _cold_start(bench, spec, 0, {"PYTHONPROFILEIMPORTTIME": "1"})
        if outcome is None:
            return None
        logs.append(outcome[2].read_text(errors="replace"))
    return parse_importtime(logs)


def lite_accepts_workers(python, spec):
    """True when ``python -m lite_serving DIR --help`` (the server's own options) lists ``--workers``."""
    _, cwd = spec.command("echo", 0)
    cmd = [str(python), "-m", "lite_serving", str(cwd), "--help"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return "--workers" in proc.stdout + proc.stderr


def run_workers(bench):
    """lite with --workers 1 and 2; nothing pinned, so wrk shares the two cores with the workers."""
    spec = SERVERS["lite"]
    if "lite" not in bench.pythons:
        bench.results.note("workers scenario skipped: lite is not selected or could not be installed")
        return
    if not lite_accepts_workers(bench.pythons["lite"], spec):
        bench.results.note(
            "workers scenario skipped: `python -m lite_serving DIR --help` does not list --workers"
        )
        bench.log("[workers] skipped: lite_serving does not accept --workers")
        return
    for rnd in range(1, bench.settings.rounds + 1):
        bench.log(f"[round {rnd}/{bench.settings.rounds}] workers")
        for n in WORKER_COUNTS:
            session = Session(
                workers_column(n), "echo", (WORKERS_LOAD,), rss_cell("workers"), workers=n, pinned=False
            )
            run_session(bench, spec, session, rnd)
