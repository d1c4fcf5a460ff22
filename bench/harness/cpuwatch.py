"""How much CPU other work took while a load ran: the machine's busy time minus ours.

"Ours" is the server process tree, the harness itself and the children it reaped
(wrk). What is left was used by something else on the machine, which skews the
numbers of that run; every wrk sample records it as ``foreign_cpu``.
"""

import os
import resource
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NOISY_SHARE = 0.05  # other work taking this share of all CPUs during a run gets called out


def machine_busy_s():
    """Busy CPU seconds of all CPUs since boot (everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def process_cpu_s(pids):
    """User + system CPU seconds of the processes ``pids`` (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def own_cpu_s():
    """CPU seconds of the harness and of its reaped children (wrk runs)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


class ForeignCpu:
    """Context manager: ``share`` is the fraction of all CPUs used by other work meanwhile."""

    def __init__(self, server_pids):
        self.pids = server_pids
        self.share = 0.0

    def _snapshot(self):
        return time.monotonic(), machine_busy_s(), process_cpu_s(self.pids), own_cpu_s()

    def __enter__(self):
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc):
        elapsed, busy, server, own = (b - a for a, b in zip(self.start, self._snapshot()))
        foreign = max(busy - server - own, 0.0)
        self.share = foreign / max(elapsed * (os.cpu_count() or 1), 1e-9)
        return False
