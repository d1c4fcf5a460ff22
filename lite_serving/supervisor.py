"""``--workers N``: a supervisor process that forks N serving workers sharing one port.

Each worker binds its own socket with SO_REUSEPORT (the kernel spreads
connections over them), builds the predictor after the fork and listens once
it is built. A worker that dies is restarted, with a growing pause if it keeps
dying at once. SIGTERM/SIGINT are passed on to the workers; a worker still
running ``--graceful-timeout`` + 5 s later is killed, whatever it is doing
(building its predictor included), and the supervisor exits after them.
SIGHUP (reload certificates and key files) is passed on when there is
something to reload.

The supervisor waits on its own workers only: the predictor module runs in
this process before the fork, and any process it starts is its own to reap.
It sleeps in ``select`` on one pidfd per worker (Linux ≥ 5.3; elsewhere a
short poll) and on a pipe the signal handlers write to, so that neither a
signal nor a worker's exit waits for a timer, and no wait ever blocks.
"""

import os
import select
import signal
import time

from . import logs

log = logs.get_logger("lite_serving")

FAST_DEATH = 2.0        # a worker dying sooner than this after its start counts as a crash loop
MAX_BACKOFF = 30.0
KILL_MARGIN = 5.0       # seconds past --graceful-timeout before workers still running are killed
POLL = 0.2              # seconds between checks when worker exits cannot be waited on (no pidfd)


def die_with_parent():
    """Linux: have the kernel send SIGTERM to this process if its parent dies (even by SIGKILL)."""
    try:
        import ctypes
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _pidfd(pid):
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


class Worker:
    """One forked worker: its slot, pid, start time and (where the kernel offers one) pidfd."""

    __slots__ = ("slot", "pid", "started", "fd")

    def __init__(self, slot, pid):
        self.slot = slot
        self.pid = pid
        self.started = time.monotonic()
        self.fd = _pidfd(pid)

    def reap(self):
        """The exit code if the worker has ended (and is now reaped), else None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else: its status is lost
            return -1
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Supervisor:
    """Forks ``count`` processes running ``work(slot)`` (which returns an exit status) and keeps
    them up; ``slot`` (0 to count - 1) is the worker's place, kept by the worker replacing it."""

    def __init__(self, count, work, graceful_timeout, forward_reload=False):
        self.count = count
        self.forward_reload = forward_reload   # SIGHUP is passed on to the workers
        self.work = work
        self.graceful_timeout = graceful_timeout
        self.workers = {}       # pid -> Worker
        self.backoff = {}       # slot -> seconds to wait before the next restart
        self.restart_at = {}    # slot -> monotonic time its worker is started again
        self.stopping = False
        self.kill_at = None
        self._wake_r = self._wake_w = None

    # -- processes -------------------------------------------------------

    def _spawn(self, slot):
        # blocked across the fork, so that the child never runs the supervisor's handlers
        handled = {signal.SIGTERM, signal.SIGINT}
        if self.forward_reload:
            handled.add(signal.SIGHUP)
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        pid = os.fork()
        if pid == 0:
            self._become_worker(slot, handled)
        self.workers[pid] = Worker(slot, pid)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        log.info("worker %d started (pid %d)", slot, pid)

    def _become_worker(self, slot, handled):
        """In the forked child: drop the supervisor's signal plumbing, run ``work()``, exit."""
        signal.set_wakeup_fd(-1)
        for sig in handled:
            # SIGHUP ignored until the worker installs its own reload: a reload, not an end
            signal.signal(sig, signal.SIG_IGN if sig == signal.SIGHUP else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for worker in self.workers.values():
            worker.close()
        die_with_parent()
        status = 1
        try:
            status = self.work(slot) or 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", slot)
        finally:
            logs.shutdown()
            os._exit(status)

    def _on_signal(self, _signum, _frame):
        if self.stopping:
            return
        self.stopping = True
        self.kill_at = time.monotonic() + self.graceful_timeout + KILL_MARGIN
        self.restart_at.clear()
        self._signal_workers(signal.SIGTERM)

    def _on_reload(self, signum, _frame):
        self._signal_workers(signum)

    def _signal_workers(self, signum):
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _kill_stragglers(self):
        for pid in list(self.workers):
            log.error("worker pid %d did not stop in time; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.kill_at = float("inf")

    # -- the loop --------------------------------------------------------

    def run(self):
        """Supervise until told to stop; returns the exit status for the supervisor."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if self.forward_reload:
            signal.signal(signal.SIGHUP, self._on_reload)
        log.info("supervisor pid %d: starting %d workers", os.getpid(), self.count)
        try:
            for slot in range(self.count):
                self._spawn(slot)
            while self.workers or self.restart_at:
                self._sleep()
                self._reap()
                now = time.monotonic()
                if self.kill_at is not None and now >= self.kill_at:
                    self._kill_stragglers()
                for slot, when in list(self.restart_at.items()):
                    if now >= when:
                        del self.restart_at[slot]
                        self._spawn(slot)
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            os.close(self._wake_r)
            os.close(self._wake_w)
        log.info("supervisor: all workers stopped")
        return 0

    def _sleep(self):
        """Until a worker may have ended, a signal came, or the next deadline."""
        now = time.monotonic()
        deadlines = list(self.restart_at.values())
        if self.kill_at is not None and self.kill_at != float("inf"):
            deadlines.append(self.kill_at)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        fds = [w.fd for w in self.workers.values() if w.fd is not None]
        if len(fds) < len(self.workers):
            timeout = POLL if timeout is None else min(timeout, POLL)
        try:
            ready, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
        except InterruptedError:
            return
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass

    def _reap(self):
        for worker in list(self.workers.values()):
            code = worker.reap()
            if code is None:
                continue
            worker.close()
            del self.workers[worker.pid]
            self._on_exit(worker, code)

    def _on_exit(self, worker, code):
        slot, pid = worker.slot, worker.pid
        if self.stopping:
            log.info("worker %d (pid %d) exited with %d", slot, pid, code)
            return
        lived = time.monotonic() - worker.started
        delay = self.backoff.get(slot, 0.0)
        delay = min(MAX_BACKOFF, max(0.5, delay * 2)) if lived < FAST_DEATH else 0.0
        self.backoff[slot] = delay
        log.error("worker %d (pid %d) died with status %d after %.1fs; restarting it%s",
                  slot, pid, code, lived, f" in {delay:.1f}s" if delay else "")
        self.restart_at[slot] = time.monotonic() + delay
