"""Running ``predict`` off the I/O thread, in batches.

The I/O thread hands over what one turn of its loop collected; each
connection's entry is a unit of work, so idle threads share a batch and one
slow predict holds up only its own connection. A thread appends answered
entries to ``done`` and wakes the loop unless a wake-up is already pending.
Requests of one connection travel in one entry, so pipelined answers keep
their order.

A batch is ``[(connection, [[view, reply or None], ...]), ...]``; answering
fills each ``None`` with ``handle(view)``.
"""

import collections
import logging
import queue
import threading

log = logging.getLogger("lite_serving")


def answer_batch(batch, handle):
    """Fill each unanswered item with ``handle(view)``; a failure leaves it None (a 500)."""
    for _conn, items in batch:
        for item in items:
            if item[1] is None:
                try:
                    item[1] = handle(item[0])
                except BaseException:  # handle() catches predict's errors: this is a bug
                    log.exception("answering a request failed")
    return batch


class PredictPool:
    """``threads`` daemon threads answering batches with ``handle``; ``wake()`` tells the loop."""

    def __init__(self, handle, threads, wake):
        self.handle = handle
        self.threads = threads
        self.done = collections.deque()
        self._wake = wake
        self._queue = queue.SimpleQueue()
        self.wake_pending = False
        self.in_flight = 0  # batches submitted and not yet collected (I/O thread only)
        self._workers = [threading.Thread(target=self._work, name=f"predict-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._workers:
            t.start()

    def submit(self, batch):
        """Queue every connection's entry of ``batch`` (I/O thread)."""
        self.in_flight += len(batch)
        put = self._queue.put
        for entry in batch:
            put(entry)

    def collect(self):
        """Answered entries, as one batch (I/O thread)."""
        self.wake_pending = False
        done = self.done
        out = []
        while done:
            out.append(done.popleft())
        self.in_flight -= len(out)
        return out

    def _work(self):
        get = self._queue.get
        handle = self.handle
        while True:
            entry = get()
            if entry is None:
                return
            answer_batch((entry,), handle)
            self.done.append(entry)
            if not self.wake_pending:
                self.wake_pending = True
                self._wake()

    def stop(self):
        for _ in self._workers:
            self._queue.put(None)
