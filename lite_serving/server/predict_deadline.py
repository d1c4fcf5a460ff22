"""``--predict-timeout``: the deadline of each predict call, who watches it, what happens past it.

- The thread that runs a call registers it with the requests it answers
  (:meth:`PredictDeadlines.begin`) and says when it returned (:meth:`end`).
- The I/O loop watches: it sleeps in ``select`` no longer than the earliest
  deadline (:meth:`due_in`) and, once a deadline has passed, answers that
  call's requests 504 (:meth:`expire`).
- A thread cannot be stopped, so the call is then *stuck*: its answer, if it
  ever comes, is dropped (``end`` returns True and the dispatch delivers
  :data:`LATE`, which a connection ignores), and its thread counts as taken.
- While stuck calls hold every slot (``slots``: the predict threads, the batch
  thread, or the asyncio loop of ``async def predict``), the dispatch is
  *saturated*: new predicts, and those queued
  for a thread, are answered 503 at once; ``/readyz`` answers 503; and once
  that has lasted longer than the timeout again, ``/healthz`` answers 503 too,
  so that an orchestrator restarts the process (:meth:`health`). When a stuck
  call returns, its slot is free again and all goes back to 200.

Under ``--dispatch auto`` a call that got stuck on the I/O thread (which the
watchdog then handed over) holds no pool thread: it is stuck, but does not count
towards saturation (``pooled=False``). An ``async def predict`` is cancelled by
its own loop at the timeout; its deadline here is ``grace`` later, a backstop
for a coroutine that blocks that loop. Calls start in deadline order (every call
has the same timeout), so the earliest deadline is the first entry of ``_running``. The lock is held for a
dictionary operation at the start and end of each call (only when the timeout
is set) and by the I/O thread while it looks at the first entry.
"""

import threading
from time import monotonic

from lite_serving.http.replies import Reply

# The "answer" of a call that returned after its deadline: its client was already answered 504.
LATE = Reply(0, None, True)

HEALTHY, SATURATED, STUCK = 0, 1, 2   # health(): all well; /readyz fails; /healthz fails too


class PredictDeadlines:
    """The deadlines of the calls of one kind of predict thread (the pool, or the batch thread)."""

    def __init__(self, timeout, slots, metrics, what=None, grace=0.0):
        self.timeout = timeout          # --predict-timeout, as the messages give it
        self.slots = max(1, slots)
        self.metrics = metrics
        self.what = what or f"every predict thread ({self.slots})"
        self._after = timeout + grace
        self._lock = threading.Lock()
        self._running = {}      # key → (deadline, requests, pooled), in deadline order
        self._stuck = {}        # key → pooled, of calls past their deadline that have not returned
        self._pooled_stuck = 0
        self._saturated_since = None   # when every slot was last seen stuck (I/O thread)

    # -- the thread running a call ---------------------------------------------------

    def begin(self, requests, pooled=True):
        """A call answering ``requests`` (``[(connection, view), ...]``) starts now, on a thread
        of the slots (``pooled``) or not; its key."""
        key = object()
        deadline = monotonic() + self._after
        with self._lock:
            self._running[key] = (deadline, requests, pooled)
        return key

    def end(self, key):
        """The call returned: True when it did so past its deadline (its answer is dropped)."""
        with self._lock:
            if self._running.pop(key, None) is not None:
                return False
            if self._stuck.pop(key):
                self._pooled_stuck -= 1
        return True

    # -- the I/O thread --------------------------------------------------------------

    def due_in(self, now):
        """Seconds until the earliest deadline (0 when passed), None when no call runs."""
        if not self._running:
            return None
        with self._lock:
            for deadline, _requests, _pooled in self._running.values():
                return max(0.0, deadline - now)
        return None

    def expire(self, now):
        """The requests of every call whose deadline has passed; those calls are stuck now."""
        expired = []
        with self._lock:
            running = self._running
            while running:
                key = next(iter(running))
                deadline, requests, pooled = running[key]
                if deadline > now:
                    break
                del running[key]
                self._stuck[key] = pooled
                self._pooled_stuck += pooled
                expired += requests
        self.metrics.predict_timeouts += len(expired)
        return expired

    @property
    def stuck(self):
        """Calls past their deadline that have not returned."""
        return len(self._stuck)

    @property
    def saturated(self):
        """Every slot is held by a stuck call."""
        return self._pooled_stuck >= self.slots

    def health(self, now):
        """HEALTHY, SATURATED (not ready), or STUCK (saturated for over the timeout: not alive)."""
        if not self.saturated:
            self._saturated_since = None
            return HEALTHY
        if self._saturated_since is None:
            self._saturated_since = now
        return STUCK if now - self._saturated_since > self.timeout else SATURATED

    def describe_saturation(self):
        return (f"{self.what} is held by a call that ran past --predict-timeout "
                f"({self.timeout:g} s); retry shortly")
