"""``--predict-timeout``: the deadline of each predict call, who watches it, what happens past it.

- The thread that runs a call registers it with the requests it answers
  (:meth:`PredictDeadlines.begin`) and says when it returned (:meth:`end`).
- The I/O loop watches: it sleeps in ``select`` no longer than the earliest
  deadline (:meth:`due_in`) and, once a deadline has passed, answers that
  call's requests 504 (:meth:`expire`).
- A thread cannot be stopped, so the call is then *stuck*: its answer, if it
  ever comes, is dropped (``end`` returns True and the dispatch delivers
  :data:`LATE`, which a connection ignores), and its thread counts as taken.
- While stuck calls hold every slot (``slots``: the predict threads, or the
  batch thread), the dispatch is *saturated*: new predicts, and those queued
  for a thread, are answered 503 at once; ``/readyz`` answers 503; and once
  that has lasted longer than the timeout again, ``/healthz`` answers 503 too,
  so that an orchestrator restarts the process (:meth:`health`). When a stuck
  call returns, its slot is free again and all goes back to 200.

Calls start in deadline order (every call has the same timeout), so the
earliest deadline is the first entry of ``_running``. The lock is held for a
dictionary operation at the start and end of each call (only when the timeout
is set) and by the I/O thread while it looks at the first entry.
"""

import threading
from time import monotonic

# The "answer" of a call that returned after its deadline: its client was already answered 504.
LATE = (0, None, True)

HEALTHY, SATURATED, STUCK = 0, 1, 2   # health(): all well; /readyz fails; /healthz fails too


class PredictDeadlines:
    """The deadlines of the calls of one kind of predict thread (the pool, or the batch thread)."""

    def __init__(self, timeout, slots, metrics):
        self.timeout = timeout
        self.slots = max(1, slots)
        self.metrics = metrics
        self._lock = threading.Lock()
        self._running = {}      # key → (deadline, [(connection, view), ...]), in deadline order
        self._stuck = set()     # keys of calls past their deadline that have not returned
        self._saturated_since = None   # when every slot was last seen stuck (I/O thread)

    # -- the thread running a call ---------------------------------------------------

    def begin(self, requests):
        """A call answering ``requests`` (``[(connection, view), ...]``) starts now; its key."""
        key = object()
        deadline = monotonic() + self.timeout
        with self._lock:
            self._running[key] = (deadline, requests)
        return key

    def end(self, key):
        """The call returned: True when it did so past its deadline (its answer is dropped)."""
        with self._lock:
            if self._running.pop(key, None) is not None:
                return False
            self._stuck.discard(key)
            self.metrics.predicts_stuck = len(self._stuck)
        return True

    # -- the I/O thread --------------------------------------------------------------

    def due_in(self, now):
        """Seconds until the earliest deadline (0 when passed), None when no call runs."""
        if not self._running:
            return None
        with self._lock:
            for deadline, _requests in self._running.values():
                return max(0.0, deadline - now)
        return None

    def expire(self, now):
        """The requests of every call whose deadline has passed; those calls are stuck now."""
        expired = []
        with self._lock:
            running = self._running
            while running:
                key = next(iter(running))
                deadline, requests = running[key]
                if deadline > now:
                    break
                del running[key]
                self._stuck.add(key)
                expired += requests
            if expired:
                self.metrics.predict_timeouts += len(expired)
                self.metrics.predicts_stuck = len(self._stuck)
        return expired

    @property
    def saturated(self):
        """Every slot is held by a stuck call."""
        return len(self._stuck) >= self.slots

    def health(self, now):
        """HEALTHY, SATURATED (not ready), or STUCK (saturated for over the timeout: not alive)."""
        if not self.saturated:
            self._saturated_since = None
            return HEALTHY
        if self._saturated_since is None:
            self._saturated_since = now
        return STUCK if now - self._saturated_since > self.timeout else SATURATED

    def describe_saturation(self):
        return (f"every predict thread ({self.slots}) is held by a call that ran past "
                f"--predict-timeout ({self.timeout:g} s); retry shortly")
