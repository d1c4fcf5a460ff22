"""``--workers N``: a supervisor process that forks N serving workers sharing one port.

Each worker binds its own listening socket with SO_REUSEPORT (the kernel
spreads connections over them) and builds the predictor after the fork. A
worker that dies is restarted, with a growing pause if it keeps dying at
once. SIGTERM/SIGINT are passed on to the workers; the supervisor exits after
them.
"""

import logging
import os
import signal
import time

log = logging.getLogger("lite_serving")

FAST_DEATH = 2.0        # a worker dying sooner than this after its start counts as a crash loop
MAX_BACKOFF = 30.0


def _die_with_parent():
    """Linux: have the kernel send SIGTERM to this worker if the supervisor dies (even by SIGKILL)."""
    try:
        import ctypes
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Supervisor:
    """Forks ``count`` processes running ``work()`` (which returns an exit status) and keeps them up."""

    def __init__(self, count, work, graceful_timeout):
        self.count = count
        self.work = work
        self.graceful_timeout = graceful_timeout
        self.children = {}      # pid -> (slot, start time)
        self.backoff = {}       # slot -> seconds to wait before the next restart
        self.stopping = False

    def _spawn(self, slot):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _die_with_parent()
            status = 1
            try:
                status = self.work() or 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(status)
        self.children[pid] = (slot, time.monotonic())
        log.info("worker %d started (pid %d)", slot, pid)

    def _on_signal(self, signum, _frame):
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self):
        """Supervise until told to stop; returns the exit status for the supervisor."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("supervisor pid %d: starting %d workers", os.getpid(), self.count)
        for slot in range(self.count):
            self._spawn(slot)
        stop_deadline = None
        while self.children:
            if self.stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + self.graceful_timeout + 5
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                for pid in list(self.children):
                    log.error("worker pid %d did not stop in time; killing it", pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                stop_deadline = float("inf")
            try:
                pid, status = os.waitpid(-1, 0 if stop_deadline is None else os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                time.sleep(0.05)
                continue
            slot, started = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                log.info("worker %d (pid %d) exited with %d", slot, pid, code)
                continue
            lived = time.monotonic() - started
            delay = self.backoff.get(slot, 0.0)
            delay = min(MAX_BACKOFF, max(0.5, delay * 2)) if lived < FAST_DEATH else 0.0
            self.backoff[slot] = delay
            log.error("worker %d (pid %d) died with status %d after %.1fs; restarting it%s",
                      slot, pid, code, lived, f" in {delay:.1f}s" if delay else "")
            end = time.monotonic() + delay
            while not self.stopping and time.monotonic() < end:
                time.sleep(0.05)
            if not self.stopping:
                self._spawn(slot)
        log.info("supervisor: all workers stopped")
        return 0
