"""Facts about the machine a run happened on."""

import datetime
import os
import platform
import sys
import time
from pathlib import Path

from .cpuwatch import machine_busy_s


def cpu_model():
    """The first ``model name`` of /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(wrk_version):
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "wrk": wrk_version,
        "busy_at_start": busy_fraction(),
    }


def busy_fraction(window_s=1.0):
    """Share of all CPUs' time spent busy over ``window_s`` (other work skews every number)."""
    try:
        before = machine_busy_s()
        time.sleep(window_s)
        busy = machine_busy_s() - before
    except (OSError, ValueError, IndexError):
        return None
    return round(busy / (window_s * (os.cpu_count() or 1)), 3)


def cpu_layout():
    """``(server cpus, client cpus, all cpus)`` as taskset lists.

    The server gets the first CPU we may use and wrk the second; with a single CPU
    both share it.
    """
    cpus = sorted(os.sched_getaffinity(0))
    server, client = cpus[0], cpus[1] if len(cpus) > 1 else cpus[0]
    return str(server), str(client), ",".join(map(str, cpus))


def pin_client():
    """Keep this process, and the load generators it starts, on the client CPU of
    :func:`cpu_layout`; ``(server cpu, client cpu)`` as numbers."""
    server_cpu, client_cpu = (int(c) for c in cpu_layout()[:2])
    os.sched_setaffinity(0, {client_cpu})
    return server_cpu, client_cpu
