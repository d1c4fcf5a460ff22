"""Facts about the machine a run happened on."""
import datetime
import os
import platform
import sys
from pathlib import Path


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
    }


def cpu_layout():
    """``(server cpus, client cpus, all cpus)`` as taskset lists.

    The server gets the first CPU we may use and wrk the second; with a single CPU
    both share it.
    """
    cpus = sorted(os.sched_getaffinity(0))
    server, client = cpus[0], cpus[1] if len(cpus) > 1 else cpus[0]
    return str(server), str(client), ",".join(map(str, cpus))
