"""``--workers N``: a supervisor process and N serving workers that share one listening socket.

The supervisor binds the port before any worker starts (``SO_REUSEPORT`` only
with ``--reuse-port``, so that a second server on a port in use fails), and
every worker inherits that one socket: it builds its predictor, listens, and
accepts from the one queue the kernel keeps. A worker that takes no
connection (starting, stuck, dying) leaves them to the others, and a
connection waiting in the queue outlives any worker.

Each worker writes how it is into a record the supervisor reads
(:mod:`~lite_serving.process.heartbeat`): starting, ready, saturated, and the last
tick of its I/O loop. The supervisor sleeps in ``select`` on one pidfd per
worker (Linux ≥ 5.3; elsewhere it polls), on a pipe its signal handlers write
to, and at most ``CHECK`` seconds; then it acts on its deadlines:

=============================================  ==========================================
what is watched                                when the deadline passes
=============================================  ==========================================
a new worker builds its predictor and listens  ``--worker-start-timeout``: killed; a failed start
a ready worker's I/O loop ticks (≈ 1/s)        ``--worker-timeout`` without a tick: killed
                                               (it cannot drain) and started again
every predict thread of a worker stuck         at once: the worker is stopped (it accepts
(``--predict-timeout``)                        nothing meanwhile) and a replacement starts (after
                                               a pause when its slot was replaced so within
                                               ``SATURATION_WINDOW``)
a stopped worker drains                        ``--graceful-timeout`` + ``KILL_MARGIN``: killed
a worker that was ready dies                   started again; after a death within
                                               ``FAST_DEATH`` of its start, after a pause that
                                               doubles up to ``MAX_BACKOFF``
workers fail to start ``MAX_START_FAILURES``   the supervisor stops every worker and exits 1,
times in a row                                 repeating the last one's error
=============================================  ==========================================

Signals, each handled in the supervisor's loop (the handlers only note them):
SIGTERM and SIGINT stop everything (passed on to the workers; the supervisor
exits after them). SIGHUP passes SIGHUP on to the workers when they have
certificates or key files to reload, and replaces the workers one at a time
(a rolling reload): a new worker is started from the command that started the
server, in a new interpreter, so that a changed predictor.py and model are
read; once it is ready, the other workers of its slot are stopped and drain
(while it starts, a worker of its slot that dies is not started again). A new worker
that fails to start ends the reload and the old ones go on serving. After a
complete reload, workers started again after a death are started the same way.

The supervisor waits on its own workers only: the predictor module runs in
this process before the fork, and any process it starts is its own to reap.
"""

import os
import select
import signal
import time

from lite_serving.process import logs
from lite_serving.process.heartbeat import SATURATED, STARTING, STUCK, Beat, Board

log = logs.get_logger("lite_serving")

FAST_DEATH = 2.0        # a worker dying sooner than this after its start counts as a crash loop
MAX_BACKOFF = 30.0
KILL_MARGIN = 5.0       # seconds past --graceful-timeout before a stopped worker is killed
CHECK = 0.25            # seconds between reads of the workers' records
MAX_START_FAILURES = 5  # workers failing to start this many times in a row end the supervisor
SATURATION_WINDOW = 60.0  # a slot saturated again within this is replaced after a pause
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Worker:
    """One worker process: its slot, pid, record on the board, and where it is in its life."""

    __slots__ = ("slot", "pid", "started", "fd", "record", "ready", "stopping", "killed",
                 "kill_at", "fresh")

    def __init__(self, slot, pid, record, fresh):
        self.slot = slot
        self.pid = pid
        self.record = record
        self.fresh = fresh        # started from the command (a new interpreter), not forked
        self.started = time.monotonic()
        self.fd = _pidfd(pid)
        self.ready = False        # it has listened once
        self.stopping = False     # sent SIGTERM by the supervisor: it drains, nothing replaces it
        self.killed = False       # sent SIGKILL
        self.kill_at = None       # when a stopping worker is killed

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
    """Starts ``count`` workers running ``work(beat)`` on ``listener`` and keeps them up;
    ``beat`` is the worker's record on the board (its heartbeat, and its row of /metrics).

    ``command`` and ``cwd``: how to start a worker in a new interpreter (a reload).
    """

    def __init__(self, count, work, config, listener, command, cwd):
        self.count = count
        self.work = work
        self.config = config
        self.listener = listener
        self.command = command
        self.cwd = cwd
        self.forward_reload = bool(config.ssl_certfile or config.api_key_file)
        self.board = Board(3 * count + 2)
        self.workers = {}       # pid -> Worker
        self.backoff = {}       # slot -> seconds to wait before the next restart
        self.restart_at = {}    # slot -> monotonic time its worker is started again
        self.stopping = False
        self.status = 0
        self.start_failures = 0   # workers in a row that ended before they were ready
        self.fresh_workers = False  # after a reload: start workers from the command
        self.reload_slots = []      # slots the reload in progress has still to replace
        self.reload_new = None      # the new worker the reload waits for (its slot's others stop)
        self.saturation_replaced = {}   # slot -> (when, pause) of its last saturated replacement
        self.reload_pending = False     # SIGHUP came while workers were starting
        self._reload_waiting_logged = False
        self._asked = set()         # signals noted by the handlers, handled by the loop
        self._wake_r = self._wake_w = None

    # -- processes -------------------------------------------------------

    def _spawn(self, slot, retry=True):
        """Start a worker for ``slot``; returns it (None when it could not be started, and then,
        when ``retry``, it is tried again later)."""
        record = self.board.take()
        if record is None:   # every record held by workers still stopping: try again shortly
            log.error("cannot start worker %d yet: %d workers are still stopping", slot,
                      sum(1 for w in self.workers.values() if w.stopping))
            if retry:
                self.restart_at[slot] = time.monotonic() + 1.0
            return None
        fresh = self.fresh_workers
        # blocked across the fork, so that the child never runs the supervisor's handlers
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
            if pid == 0:
                self._become_worker(slot, record, fresh)
            worker = self.workers[pid] = Worker(slot, pid, record, fresh)
        except OSError as exc:
            self.board.give_back(record)
            log.error("cannot start worker %d: %s", slot, exc)
            if retry:
                self.restart_at[slot] = time.monotonic() + MAX_BACKOFF
            return None
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        log.info("worker %d started (pid %d)%s", slot, pid,
                 ", from a new interpreter" if fresh else "")
        return worker

    def _become_worker(self, slot, record, fresh):
        """In the forked child: drop the supervisor's signal plumbing, then serve (forked) or
        start the command in a new interpreter (exec); never returns."""
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # ignored until the worker installs its own: a reload, never an end
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            os.close(self._wake_r)
            os.close(self._wake_w)
            for worker in self.workers.values():
                worker.close()
            if fresh:
                self._exec_worker(slot, record)
            die_with_parent()
            beat = Beat(self.board.map, record)
            try:
                status = self.work(beat) or 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:
                log.exception("worker %d failed", slot)
                beat.failed(f"{type(exc).__name__}: {exc}")
        finally:
            logs.shutdown()
            os._exit(status)

    def _exec_worker(self, slot, record):
        listen_fd = self.listener.fileno()
        os.set_inheritable(listen_fd, True)
        os.set_inheritable(self.board.fd, True)
        from lite_serving.serve import WORKER_ENV
        env = dict(os.environ)
        env[WORKER_ENV] = f"{listen_fd},{self.board.fd},{record},{slot},{os.getppid()}"
        try:
            os.chdir(self.cwd)
            os.execve(self.command[0], self.command, env)
        except OSError as exc:
            log.error("cannot start worker %d as %s: %s", slot, " ".join(self.command), exc)

    def _stop_worker(self, worker, now):
        """SIGTERM: it drains; killed if still running at ``--graceful-timeout`` + KILL_MARGIN."""
        worker.stopping = True
        worker.kill_at = now + self.config.graceful_timeout + KILL_MARGIN
        _kill(worker.pid, signal.SIGTERM)

    def _kill_worker(self, worker):
        worker.killed = True
        _kill(worker.pid, signal.SIGKILL)

    # -- signals ---------------------------------------------------------

    def _on_signal(self, signum, _frame):
        self._asked.add(signum)   # the wake-up fd breaks the loop out of select

    def _handle_signals(self):
        asked, self._asked = self._asked, set()
        if asked & {signal.SIGTERM, signal.SIGINT}:
            if not self.stopping:
                self._stop_all()
        elif signal.SIGHUP in asked and not self.stopping:
            self._reload()

    def _stop_all(self):
        self.stopping = True
        self.restart_at.clear()
        self._end_reload()
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if not worker.stopping:
                self._stop_worker(worker, now)
        # the last copy of the socket closes with the last worker: the port then refuses
        self.listener.close()

    # -- SIGHUP: the rolling reload ---------------------------------------

    def _reload(self):
        if self.forward_reload:
            for worker in self.workers.values():
                _kill(worker.pid, signal.SIGHUP)
            log.info("SIGHUP: certificates and key files reloaded by the workers")
        if self.reload_new is not None:
            log.info("SIGHUP: a reload is already under way (worker %d)", self.reload_new.slot)
            return
        self.reload_pending = True
        self._reload_replacing()

    def _reload_replacing(self):
        """Start replacing the workers, unless one is still building its predictor: replacing
        it now would build the model twice at once; the reload then starts once all are ready."""
        if any(not w.ready for w in self.workers.values() if not w.stopping):
            if not self._reload_waiting_logged:
                self._reload_waiting_logged = True
                log.info("SIGHUP: workers are still starting; they are replaced one at a time "
                         "once they are ready")
            return
        self.reload_pending = self._reload_waiting_logged = False
        self.reload_slots = sorted({w.slot for w in self.workers.values() if not w.stopping})
        log.info("SIGHUP: replacing the workers one at a time by new ones, which read "
                 "predictor.py and the model again")
        self._reload_next()

    def _reload_next(self):
        if not self.reload_slots:
            log.info("reload done: every worker runs the predictor read at the reload")
            self.fresh_workers = True
            self._end_reload()
            return
        slot = self.reload_slots.pop(0)
        saved, self.fresh_workers = self.fresh_workers, True
        self.reload_new = self._spawn(slot, retry=False)
        self.fresh_workers = saved
        if self.reload_new is None:
            log.error("reload: no new worker could be started for slot %d; the reload stops and "
                      "the workers running go on serving", slot)
            self._end_reload()

    def _reload_step_done(self, now):
        """The new worker of a slot is ready: every other worker of that slot (the one it
        replaces, and any started meanwhile) stops and drains, and no restart of the slot is due."""
        new = self.reload_new
        self.restart_at.pop(new.slot, None)
        for worker in list(self.workers.values()):
            if worker.slot == new.slot and worker is not new and not worker.stopping:
                log.info("reload: worker %d (pid %d) is ready; stopping worker pid %d, which "
                         "drains", new.slot, new.pid, worker.pid)
                self._stop_worker(worker, now)
        self._reload_next()

    def _loading_for(self, slot):
        """A new worker of the reload in progress is starting for ``slot``."""
        return self.reload_new is not None and self.reload_new.slot == slot

    def _end_reload(self):
        self.reload_slots = []
        self.reload_new = None

    # -- the loop --------------------------------------------------------

    def run(self):
        """Supervise until told to stop; returns the exit status for the supervisor."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        previous_wakeup = signal.set_wakeup_fd(self._wake_w)
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)
        log.info("supervisor pid %d: starting %d workers", os.getpid(), self.count)
        try:
            for slot in range(self.count):
                self._spawn(slot)
            while self.workers or self.restart_at:
                self._sleep()
                self._handle_signals()
                self._reap()
                self._check(time.monotonic())
        finally:
            # stopped: a stop or reload asked for from now on changes nothing, nor the exit
            # status. Ignored, not left to our handler: the interpreter resets a Python-level
            # handler to the default action as it finalizes, and a signal arriving then would
            # end the process (-15 for a second SIGTERM) instead of letting it exit with 0.
            for sig in HANDLED:
                signal.signal(sig, signal.SIG_IGN)
            signal.set_wakeup_fd(previous_wakeup)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.board.close()
            self.listener.close()
        log.info("supervisor: all workers stopped")
        return self.status

    def _sleep(self):
        """Until a worker may have ended, a signal came, the next restart, or CHECK seconds."""
        timeout = CHECK
        if not self.workers and self.restart_at:
            timeout = max(0.0, min(self.restart_at.values()) - time.monotonic())
        fds = [w.fd for w in self.workers.values() if w.fd is not None]
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

    def _check(self, now):
        """The deadlines of the table in the module's docstring; a reload asked for while workers
        were starting, once they are ready."""
        if self.reload_pending and not self.stopping and self.reload_new is None:
            self._reload_replacing()
        for slot, when in list(self.restart_at.items()):
            if now >= when:
                del self.restart_at[slot]
                self._spawn(slot)
        config = self.config
        for worker in list(self.workers.values()):
            if worker.killed:
                continue
            if worker.stopping:
                if now >= worker.kill_at:
                    log.error("worker %d (pid %d) did not stop within --graceful-timeout (%g s); "
                              "killing it", worker.slot, worker.pid, config.graceful_timeout)
                    self._kill_worker(worker)
                continue
            pid, state, beat, _reason = self.board.read(worker.record)
            if not worker.ready:
                if pid == worker.pid and state != STARTING:
                    worker.ready = True
                    self.start_failures = 0
                    if worker is self.reload_new:
                        self._reload_step_done(now)
                elif now - worker.started > config.worker_start_timeout:
                    log.error("worker %d (pid %d) did not become ready within "
                              "--worker-start-timeout (%g s); killing it", worker.slot,
                              worker.pid, config.worker_start_timeout)
                    self._kill_worker(worker)
                continue
            if now - beat > config.worker_timeout:
                log.error("worker %d (pid %d): its I/O loop has not turned for %.1f s "
                          "(--worker-timeout %g s); killing it and starting another", worker.slot,
                          worker.pid, now - beat, config.worker_timeout)
                self._kill_worker(worker)
            elif state in (SATURATED, STUCK):
                self._stop_worker(worker, now)
                self._replace_saturated(worker, now)

    def _replace_saturated(self, worker, now):
        """A replacement for a worker whose predict threads are all stuck: at once, unless this
        slot's last one was replaced less than SATURATION_WINDOW ago (predicts slow everywhere:
        a model load every --predict-timeout would only add load), then after a pause that
        doubles up to MAX_BACKOFF."""
        slot = worker.slot
        last, pause = self.saturation_replaced.get(slot, (None, 0.0))
        pause = min(MAX_BACKOFF, max(1.0, pause * 2)) if last is not None and \
            now - last < SATURATION_WINDOW else 0.0
        self.saturation_replaced[slot] = (now, pause)
        log.error("worker %d (pid %d): every predict thread is held by a call past "
                  "--predict-timeout; stopping it and starting a replacement%s", slot,
                  worker.pid, f" in {pause:g} s" if pause else "")
        if self._loading_for(slot):
            return   # the reload's new worker for this slot takes its place
        if pause:
            self.restart_at[slot] = now + pause
        else:
            self._spawn(slot)

    def _reap(self):
        for worker in list(self.workers.values()):
            code = worker.reap()
            if code is None:
                continue
            worker.close()
            del self.workers[worker.pid]
            pid, state, _beat, reason = self.board.read(worker.record)
            if pid == worker.pid and state != STARTING:
                worker.ready = True   # it was, though it died before the last check saw it
            self.board.give_back(worker.record)
            self._on_exit(worker, code, reason)

    def _on_exit(self, worker, code, reason):
        slot, pid = worker.slot, worker.pid
        if self.stopping or worker.stopping:
            log.info("worker %d (pid %d) exited with %d", slot, pid, code)
            return
        if worker is self.reload_new:
            log.error("reload: the new worker %d (pid %d) exited with status %d before it was "
                      "ready%s; the reload stops and the workers running go on serving",
                      slot, pid, code, f" ({reason})" if reason else "")
            self._end_reload()
            if not any(w.slot == slot and not w.stopping for w in self.workers.values()):
                self.restart_at.setdefault(slot, time.monotonic() + 0.5)   # its slot is empty
            return
        if self._loading_for(slot):
            log.error("worker %d (pid %d) died with status %d; the reload's new worker for its "
                      "slot takes its place", slot, pid, code)
            return
        if not worker.ready:
            self.start_failures += 1
            if self.start_failures >= MAX_START_FAILURES:
                log.error("workers failed to start %d times in a row; stopping. The last one "
                          "(worker %d, pid %d) exited with status %d%s", self.start_failures,
                          slot, pid, code, f": {reason}" if reason else "")
                self.status = 1
                self._stop_all()
                return
        lived = time.monotonic() - worker.started
        delay = self.backoff.get(slot, 0.0)
        delay = min(MAX_BACKOFF, max(0.5, delay * 2)) if lived < FAST_DEATH or not worker.ready \
            else 0.0
        self.backoff[slot] = delay
        log.error("worker %d (pid %d) %s with status %d after %.1fs%s; starting it again%s",
                  slot, pid, "died" if worker.ready else "failed to start", code, lived,
                  f" ({reason})" if reason else "", f" in {delay:.1f}s" if delay else "")
        self.restart_at[slot] = time.monotonic() + delay
