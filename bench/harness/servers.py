"""The servers under test: how to start one pinned to a core, wait for it, measure it, stop it."""

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .envs import ENV_SPECS
from .paths import ECHO_DIR, LOG_DIR, SERVERS_DIR, WORK_DIR

HOST = "127.0.0.1"
ONNX_MODEL = WORK_DIR / "onnx" / "model.onnx"
TLS_APPS = ("tls",)  # apps served over HTTPS, with this certificate
TLS_CERT = WORK_DIR / "tls" / "cert.pem"
TLS_KEY = WORK_DIR / "tls" / "key.pem"
# Variables that would change how a server under test behaves; each server gets
# only the ones its spec sets, whatever the harness was started with.
CONTROLLED_ENV = (
    "LITE_SERVING_PURE",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "OPENBAYES_SERVING_PRODUCTION",
    "OPENBAYES_JOB_URL",
    "BENCH_MODEL",
    "BENCH_THREADS",
)


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``GET /`` with 200 in time."""


def predictor_args(app):
    """Extra command-line arguments a predictor-file server needs for ``app``."""
    if app in TLS_APPS:
        return ["--ssl-certfile", str(TLS_CERT), "--ssl-keyfile", str(TLS_KEY)]
    return ["--model-path", str(ONNX_MODEL)] if app == "onnx" else []


def client_context():
    """The harness's own TLS client: the bench certificate is self-signed, it is not checked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class ServerSpec:
    """One column of the results: a venv plus a way to launch an app in it."""

    key: str
    label: str
    env: str
    apps: tuple = ("echo", "msgpack", "onnx", "facade", "tensor", "tls")
    extra_env: tuple = ()
    supports_workers: bool = False
    log_facts: tuple = ()  # regexes of start-up log lines worth reporting
    cold_start_only: bool = False  # another way to start a server measured elsewhere: cold start only
    tensor_dir: str = "tensor_lite"  # the directory under servers/ of its tensor app (numpy answers or not)

    def command(self, app, port, workers=None):
        """``(argv after the interpreter, working directory)`` to serve ``app`` on ``port``."""
        raise NotImplementedError

    def app_env(self, app):
        """Environment variables the server process gets for ``app`` (beyond the harness's own)."""
        return dict(self.extra_env)

    def app_dir(self, app):
        """The directory of ``app``: examples/echo for echo, else under servers/ (tensor: one per kind of server)."""
        if app in ("echo", "tls"):  # tls: the echo, over HTTPS
            return ECHO_DIR
        if app == "tensor":
            return SERVERS_DIR / self.tensor_dir
        return SERVERS_DIR / app


class PredictorScript(ServerSpec):
    """The predictor file run as a script, as openbayes-serving users do: ``python predictor.py --port P``."""

    def command(self, app, port, workers=None):
        argv = ["predictor.py", "--host", HOST, "--port", str(port), *predictor_args(app)]
        return argv, self.app_dir(app)


class LiteServer(ServerSpec):
    """lite_serving serves a directory holding ``predictor.py``: ``python -m lite_serving DIR``.

    It runs from inside the predictor directory so that ``python -m`` cannot pick up
    the repository's source tree instead of the installed package.
    """

    def command(self, app, port, workers=None):
        directory = self.app_dir(app)
        argv = ["-m", "lite_serving", str(directory), "--host", HOST, "--port", str(port)]
        argv += predictor_args(app)
        if workers is not None:
            argv += ["--workers", str(workers)]
        return argv, directory


class LiteConsoleScript(ServerSpec):
    """lite_serving's console script: ``lite-serving DIR --port P`` (no ``-m``, no runpy)."""

    def command(self, app, port, workers=None):
        directory = self.app_dir(app)
        script = ENV_SPECS[self.env].path / "bin" / "lite-serving"
        argv = [str(script), str(directory), "--host", HOST, "--port", str(port), *predictor_args(app)]
        return argv, directory


class UvicornServer(ServerSpec):
    """A raw ASGI app on uvicorn with httptools and uvloop, one worker, no access log."""

    def command(self, app, port, workers=None):
        argv = ["-m", "uvicorn", "app:app", "--http", "httptools", "--loop", "uvloop"]
        argv += ["--no-access-log", "--log-level", "warning", "--host", HOST, "--port", str(port)]
        argv += predictor_args(app) if app in TLS_APPS else []  # the same --ssl-* flags
        return argv, SERVERS_DIR / "uvicorn_raw"


SERVERS = {
    spec.key: spec
    for spec in (
        PredictorScript("reference", "reference", "reference", tensor_dir="tensor_reference",
                        apps=("echo", "msgpack", "onnx", "facade", "tensor")),  # no TLS of its own
        UvicornServer("uvicorn", "uvicorn raw", "uvicorn", apps=("echo", "msgpack", "tls")),
        LiteServer("lite", "lite", "lite", supports_workers=True, log_facts=(r"parser: .+",)),
        LiteServer(
            "lite-pure",
            "lite (pure parser and codec)",
            "lite",
            extra_env=(("LITE_SERVING_PURE", "1"),),
            log_facts=(r"parser: .+",),
        ),
        PredictorScript("lite-py", "lite (python predictor.py)", "lite", apps=("echo",),
                        cold_start_only=True),
        LiteConsoleScript("lite-cli", "lite (lite-serving DIR)", "lite", apps=("echo",),
                          cold_start_only=True),
    )
}


def free_port():
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def answers_200(port, timeout=1.0, tls=False):
    """True when ``GET /`` on ``port`` (over TLS when ``tls``) answers with status 200."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw:
            s = client_context().wrap_socket(raw) if tls else raw
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(256)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return False
    parts = head.split(b" ", 2)
    return len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1] == b"200"


def post(port, body, content_type, timeout=60.0, path="/", tls=False):
    """POST ``body`` to ``path`` (over TLS when ``tls``); return ``(status, response body)``."""
    if tls:
        conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=client_context())
    else:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _process_stats():
    """``(pid, fields of /proc/PID/stat after the command name)`` of every process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue


def process_tree(pid):
    """``pid`` and all its descendants (from /proc)."""
    children = {}
    for child, fields in _process_stats():
        children.setdefault(int(fields[1]), []).append(child)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def vm_rss_kib(pid):
    """VmRSS of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def task_cpu_seconds(pid):
    """CPU time of all live threads of ``pid``, from the scheduler's nanosecond counters."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def log_tail(path, lines=12):
    """The last ``lines`` lines of a server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class RunningServer:
    """A started server process (its own session, so it can be stopped as a group)."""

    spec: ServerSpec
    app: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    started: float = 0.0  # time.perf_counter() when the process was spawned
    startup_s: float = 0.0

    @property
    def tls(self):
        return self.app in TLS_APPS

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}/"

    def pids(self):
        """The server process and any workers it forked."""
        return process_tree(self.proc.pid)

    def rss_mib(self):
        """Resident memory of the serving process and any workers it forked, in MiB."""
        return sum(vm_rss_kib(pid) for pid in self.pids()) / 1024

    def log_facts(self):
        """The log lines matching the spec's ``log_facts`` patterns (first match of each)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        found = (re.search(pattern, text) for pattern in self.spec.log_facts)
        return [m.group(0).strip() for m in found if m]

    def process_count(self):
        return len(self.pids())

    def cpu_seconds(self):
        """CPU time used so far by every thread of the server and of any process it forked."""
        return sum(task_cpu_seconds(pid) for pid in self.pids())

    def stop(self, grace=10.0):
        """SIGTERM the process group, then SIGKILL what is left of it after ``grace``.

        The whole group is waited for, not only the server's first process: workers
        that outlive it (seen with LitServe's) would go on taking the server's CPU.
        """
        group = self.proc.pid
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while group_members(group) and time.monotonic() < deadline:
            time.sleep(0.02)
        if group_members(group):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass


def group_members(pgid):
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    return [pid for pid, fields in _process_stats() if fields[0] != "Z" and int(fields[2]) == pgid]


def server_env(spec, app=None, extra=None):
    """The environment for a server process: ours minus CONTROLLED_ENV, plus the spec's and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED_ENV}
    env.update(spec.app_env(app))
    env.update(extra or {})
    return env


REALTIME_PRIORITY = "50"  # SCHED_FIFO priority of a server under --realtime (the harness polls at 40)


def spawn_server(spec, python, app, cpus, workers=None, extra_env=None, realtime=False):
    """Start ``spec`` serving ``app`` pinned to ``cpus``, without waiting for it.

    ``realtime``: under SCHED_FIFO (``chrt``), so that other work on the machine
    cannot take the CPU from it while it starts.
    """
    port = free_port()
    argv, cwd = spec.command(app, port, workers)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{spec.key}-{app}.log"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        try:
            prefix = ["chrt", "-f", REALTIME_PRIORITY] if realtime else []
            proc = subprocess.Popen(
                [*prefix, "taskset", "-c", cpus, str(python), *argv],
                cwd=cwd,
                env=server_env(spec, app, extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            raise ServerStartError(f"{spec.label} ({app}) could not be spawned: {e}") from e
    return RunningServer(spec, app, proc, port, log_path, started)


def start_server(spec, python, app, cpus, workers=None, timeout=60.0, poll=0.001):
    """Start ``spec`` serving ``app`` pinned to ``cpus``; return once ``GET /`` answers 200.

    The returned server's ``startup_s`` is the time from spawning the process to the
    first 200 answer. Raises ServerStartError (with the log's tail) on failure.
    """
    server = spawn_server(spec, python, app, cpus, workers)
    proc, port, log_path, started = server.proc, server.port, server.log_path, server.started
    deadline = started + timeout
    while not answers_200(port, tls=server.tls):
        problem = None
        if proc.poll() is not None:
            problem = f"exited with code {proc.returncode}"
        elif time.perf_counter() > deadline:
            problem = f"did not answer GET / with 200 within {timeout:.0f}s"
        if problem:
            server.stop()
            raise ServerStartError(f"{spec.label} ({app}) {problem}; log {log_path}:\n{log_tail(log_path)}")
        time.sleep(poll)
    server.startup_s = time.perf_counter() - started
    return server
