"""Run wrk against a server and parse its ``--latency`` report."""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from .paths import WRK_SCRIPT

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk could not run or printed something we cannot read."""


def ensure_wrk(log=print):
    """Path of wrk, installing Debian's package with apt-get if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    log("[setup] wrk not found; installing it with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        subprocess.run(cmd, capture_output=True, env=env)
    if not shutil.which("wrk"):
        raise WrkError("wrk is not installed and `apt-get install wrk` did not install it")
    return shutil.which("wrk")


def wrk_version():
    proc = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (proc.stdout + proc.stderr).split("Copyright")[0].strip()


@dataclass
class WrkResult:
    """The numbers we keep from one wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    socket_errors: dict = field(default_factory=dict)

    def problems(self):
        """Why this run does not count (empty when it does)."""
        out = []
        if self.requests == 0:
            out.append("no request completed")
        if self.non_2xx:
            out.append(f"{self.non_2xx} non-2xx/3xx responses")
        errors = {k: v for k, v in self.socket_errors.items() if v}
        if errors:
            out.append("socket errors " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        return out


def _time_ms(text):
    value, unit = text
    return float(value) * _TIME_UNITS_MS[unit]


def parse_report(text):
    """Parse wrk's ``--latency`` output into a WrkResult. Raises WrkError."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+" + _TIME, text, re.M)
    p99 = re.search(r"^\s+99%\s+" + _TIME, text, re.M)
    total = re.search(r"^\s+(\d+) requests in ", text, re.M)
    if not (rps and p50 and p99 and total):
        raise WrkError("could not parse wrk output:\n" + text.strip())
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_time_ms(p50.groups()),
        p99_ms=_time_ms(p99.groups()),
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=_socket_errors(text),
    )


def _socket_errors(text):
    """``{"connect": n, "read": n, "write": n, "timeout": n}``; wrk prints the line only when one is not 0."""
    found = _SOCKET_ERRORS.search(text)
    return dict(zip(("connect", "read", "write", "timeout"), map(int, found.groups()))) if found else {}


def run_wrk(url, body, connections, duration_s, cpus, timeout_s=10, accept=None, close=False):
    """POST ``body`` (a fixtures.Body) to ``url`` for ``duration_s`` seconds, wrk pinned to ``cpus``.

    ``accept``: the Accept header to send (none by default). ``close``: send
    ``Connection: close``, so that every request opens a new connection.
    """
    cmd = [
        "taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{duration_s}s",
        f"--timeout={timeout_s}s", "--latency", "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    if close:
        cmd[-1:-1] = ["-H", "Connection: close"]
    env = {**os.environ, "BENCH_BODY_FILE": str(body.path), "BENCH_CONTENT_TYPE": body.content_type}
    env.pop("BENCH_ACCEPT", None)
    if accept:
        env["BENCH_ACCEPT"] = accept
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration_s + timeout_s + 30)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return parse_report(proc.stdout)
