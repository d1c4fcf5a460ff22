"""Where ``predict`` runs: on the I/O thread, on a pool of threads, or adaptively.

A connection hands a complete request over with ``submit(connection, view)``;
the answer comes back on the I/O thread as ``connection.on_answer(view,
reply)``. ``handle(view)`` (``Application.handle_predict``) never raises.

- :class:`InlineDispatch` (``--dispatch inline``): predict runs on the I/O
  thread after each turn of the loop; a slow predict stalls every connection.
- :class:`PoolDispatch` (``--dispatch threads``): predict runs on up to
  ``--threads`` threads, started as the load asks for them.
- :class:`AutoDispatch` (``--dispatch auto``, the default): predict runs on the
  I/O thread (no hand-off cost); a watchdog gives the loop to a new thread when
  one call holds it over ``RESCUE_AFTER``, and what was waiting then goes to the
  pool. After ``SLOW_RESCUES`` rescues within ``SLOW_WINDOW`` seconds, every
  predict runs on the pool.

Requests waiting for the I/O thread are in ``ready``, shared with whichever
thread owns the loop, so that no request waits behind another connection's
slow predict: the thread that lost the loop only posts the answer it was
computing and never touches a connection again.
"""

import collections
import queue
import threading
import time

from lite_serving.http.replies import Reply, error_reply
from lite_serving.process.logs import get_logger
from lite_serving.server.predict_deadline import LATE, PredictDeadlines

log = get_logger("lite_serving")

RESCUE_AFTER = 0.02      # seconds a predict may hold the I/O thread before another thread takes over
SLOW_RESCUES = 5         # rescues within SLOW_WINDOW seconds that move predict to the thread pool
SLOW_WINDOW = 60.0
INLINE_BELOW = 0.002     # a lone batchable request whose call took less runs on the I/O thread


def _failed(view):
    """The answer when ``handle`` itself raised: handle() catches predict's errors, so a bug."""
    log.exception("answering a request failed")
    return error_reply(500, "internal error", view.head)


def _timed(deadlines, conn, view, handle, pooled=True):
    """``handle(view)`` under ``--predict-timeout``: LATE when it returned past its deadline."""
    key = deadlines.begin([(conn, view)], pooled)
    try:
        reply = handle(view)
    except BaseException:
        reply = _failed(view)
    if deadlines.end(key):
        _returned_late(view)
        return LATE
    return reply


def _returned_late(view):
    log.warning("a predict call that ran past --predict-timeout returned, %.1f s after its request "
                "arrived; its answer is dropped (its client was answered 504)",
                time.monotonic() - view.started)


def _busy_reply(deadlines, view):
    return error_reply(503, deadlines.describe_saturation(), view.head)


def answer_busy(loop, deadlines, conn, view):
    """Every slot is stuck: a request handed over now is answered 503 at the loop's next turn
    (the connection is in the middle of handing it over)."""
    loop.call_soon_threadsafe(conn.on_answer, view, _busy_reply(deadlines, view))


def deliver(conn, view, reply):
    """``conn.on_answer`` from the I/O thread's own work (deadlines, refusals): an error closes
    that connection, never the loop."""
    try:
        conn.on_answer(view, reply)
    except Exception:
        log.exception("internal error while answering a request; closing its connection")
        conn.abort()


class InlineDispatch:
    """Predict on the I/O thread, after each turn of the loop."""

    def __init__(self, handle, loop):
        self.handle = handle
        self.loop = loop
        self.ready = collections.deque()

    def describe(self):
        return "predict runs on the I/O thread"

    summary = describe

    def submit(self, conn, view, handle=None):
        self.ready.append((conn, view, handle or self.handle))

    def pending(self):
        return bool(self.ready)

    def in_flight(self):
        return len(self.ready)

    def all_deadlines(self):
        return []   # predict holds the I/O thread: nothing in this process can watch it

    def after_turn(self, token):
        ready = self.ready
        while ready:
            conn, view, handle = ready.popleft()
            try:
                reply = handle(view)
            except BaseException:
                reply = _failed(view)
            conn.on_answer(view, reply)
        return True

    def stop(self):
        pass


class PoolDispatch:
    """Predict on up to ``threads`` threads, started as requests wait for one."""

    def __init__(self, handle, loop, threads):
        self.handle = handle
        self.loop = loop
        self.threads = threads
        self.ready = collections.deque()  # unused here; AutoDispatch keeps its inline work in it
        self._queue = queue.SimpleQueue()
        self._done = collections.deque()
        self._lock = threading.Lock()
        self._workers = []
        self._idle = 0         # threads waiting for work
        self._waiting = 0      # requests queued and not yet taken by a thread
        self._collect_pending = False
        self.submitted = 0   # requests given to the pool and not yet collected (I/O thread)
        self.deadlines = None  # a PredictDeadlines under --predict-timeout

    def describe(self):
        return f"predict runs on up to {self.threads} threads"

    summary = describe

    def pending(self):
        return False

    def in_flight(self):
        return self.submitted

    def after_turn(self, token):
        return True

    def submit(self, conn, view, handle=None):
        if self.deadlines is not None and self.deadlines.saturated:
            answer_busy(self.loop, self.deadlines, conn, view)
            return
        self.submitted += 1
        with self._lock:
            self._waiting += 1
            start = self._waiting > self._idle and len(self._workers) < self.threads
            if start:
                self._idle += 1  # the new thread counts as idle until it takes work
        if start:
            worker = threading.Thread(target=self._work, name=f"predict-{len(self._workers)}",
                                      daemon=True)
            self._workers.append(worker)
            worker.start()
        self._queue.put((conn, view, handle or self.handle))

    def _work(self):
        get, lock = self._queue.get, self._lock
        while True:
            item = get()
            if item is None:
                return
            with lock:
                self._idle -= 1
                self._waiting -= 1
            conn, view, handle = item
            if self.deadlines is None:
                try:
                    reply = handle(view)
                except BaseException:
                    reply = _failed(view)
            else:
                reply = _timed(self.deadlines, conn, view, handle)
            self.post_answer(conn, view, reply)
            with lock:
                self._idle += 1

    def post_answer(self, conn, view, reply):
        """Hand an answer computed on another thread to the I/O thread."""
        self._done.append((conn, view, reply))
        if not self._collect_pending:
            self._collect_pending = True
            self.loop.call_soon_threadsafe(self._collect)

    def _collect(self):
        self._collect_pending = False  # before draining: an answer added from now on posts again
        done = self._done
        while done:
            conn, view, reply = done.popleft()
            self.submitted -= 1
            conn.on_answer(view, reply)

    def all_deadlines(self):
        return [] if self.deadlines is None else [self.deadlines]

    def refuse_waiting(self):
        """Saturated (every thread stuck): answer 503 to the requests queued for a thread."""
        taken = self._queue.get_nowait
        while True:
            try:
                item = taken()
            except queue.Empty:
                return
            if item is None:  # stopping: leave the threads their signal
                self._queue.put(None)
                return
            with self._lock:
                self._waiting -= 1
            self.submitted -= 1
            conn, view, _handle = item
            deliver(conn, view, _busy_reply(self.deadlines, view))

    def stop(self):
        for _ in self._workers:
            self._queue.put(None)


class AutoDispatch(PoolDispatch):
    """Predict on the I/O thread, rescued by a watchdog when it is slow; the pool when often slow."""

    def __init__(self, handle, loop, threads):
        PoolDispatch.__init__(self, handle, loop, threads)
        self.adaptive = True
        self._inline_since = None
        self._to_pool = False         # set at a rescue: what waits then goes to the pool
        self._rescue_times = collections.deque()
        self._watchdog = threading.Thread(target=self._watch, name="lite_serving-watchdog", daemon=True)
        self._watchdog.start()

    def describe(self):
        return (f"predict runs on the I/O thread, handing the sockets to another thread when it "
                f"takes over {RESCUE_AFTER * 1000:.0f} ms; on up to {self.threads} threads if it is "
                "often slow")

    def summary(self):
        return f"predict runs on the I/O thread, on up to {self.threads} threads when slow"

    def submit(self, conn, view, handle=None):
        if self.adaptive and (self.deadlines is None or not self.deadlines.saturated):
            self.ready.append((conn, view, handle or self.handle))
        else:
            PoolDispatch.submit(self, conn, view, handle)

    def pending(self):
        return bool(self.ready)

    def in_flight(self):
        return len(self.ready) + self.submitted

    def after_turn(self, token):
        """Answer what waits, one request at a time; False once another thread owns the loop."""
        ready, lock, loop = self.ready, self.loop.owner_lock, self.loop
        if self._to_pool or not self.adaptive:
            self._to_pool = False
            while ready:
                PoolDispatch.submit(self, *ready.popleft())
        if not ready:
            return True
        with lock:  # the clock runs per request: many fast predicts are not one slow one
            if loop.owner is not token:
                return False
            item = ready.popleft()
            self._inline_since = time.monotonic()
        deadlines = self.deadlines
        while item is not None:
            conn, view, handle = item
            if deadlines is None:
                try:
                    reply = handle(view)
                except BaseException:
                    reply = _failed(view)
            else:   # on the I/O thread: stuck here, it holds no pool thread
                reply = _timed(deadlines, conn, view, handle, pooled=False)
            with lock:
                lost = loop.owner is not token
                if lost or not ready:
                    item = None
                    if not lost:  # a thread that lost the loop must not touch the new owner's clock
                        self._inline_since = None
                else:  # the next request's clock starts as this one's stops
                    item = ready.popleft()
                    self._inline_since = time.monotonic()
            if lost:  # the loop went on in another thread: it delivers this answer
                loop.call_soon_threadsafe(conn.on_answer, view, reply)
                return False
            conn.on_answer(view, reply)
        return True

    def _watch(self):
        """Hand the loop to a new thread when a predict holds the I/O thread too long."""
        loop = self.loop
        while not loop.finished.wait(RESCUE_AFTER / 2):
            with loop.owner_lock:
                since = self._inline_since
                if since is None or time.monotonic() - since < RESCUE_AFTER or loop.owner is None:
                    continue
                self._inline_since = None
                self._to_pool = True
                loop.hand_over()
            self._note_rescue()

    def _note_rescue(self):
        now = time.monotonic()
        times = self._rescue_times
        times.append(now)
        while times and now - times[0] > SLOW_WINDOW:
            times.popleft()
        if len(times) >= SLOW_RESCUES and self.adaptive:
            self.adaptive = False
            log.info("predict took over %.0f ms %d times in %.0f s: it runs on up to %d threads "
                     "from now on", RESCUE_AFTER * 1000, len(times), SLOW_WINDOW, self.threads)


_DROPPED = Reply(0, b"", True)  # the "answer" to a request whose client left before its batch ran


class BatchDispatch:
    """Requests the application answers in batches go to one batch thread; the rest to ``inner``.

    The batch thread takes what waits when the model becomes free, up to
    ``max_size`` requests (after waiting up to ``delay`` seconds from the
    first one for a fuller batch, when ``delay`` is positive): a lone request
    runs at once, and batches grow by themselves under load. A request whose
    client has left is dropped from its batch. The answers come back on the
    I/O thread, one ``on_answer`` per request.

    Requests are routed at the end of each turn of the loop. When exactly one
    arrived, nothing else is waiting or running, no delay is set, and a batch
    of one took under ``INLINE_BELOW`` last time, that request runs through
    ``inner`` (on the I/O thread under the adaptive dispatch, with its watchdog)
    instead: a thread hand-off would add a noticeable share to so short a call.
    One batch runs at a time (``_model``), whichever thread runs it.
    """

    def __init__(self, inner, app, loop, max_size, delay):
        self.inner = inner
        self.app = app
        self.loop = loop
        self.max_size = max_size
        self.delay = delay
        self.metrics = app.metrics
        self._queue = queue.SimpleQueue()  # (connection, view, row); None once stopped
        self._turn = []                # batchable requests of this turn, routed by after_turn
        self._waiting = 0              # given to the batch thread, not yet answered (I/O thread)
        self._thread = None
        self._model = threading.Lock()     # held while a batch runs
        self._lone_seconds = float("inf")  # how long the last batch of one took
        self._lone_running = False         # a batch of one was given to ``inner``
        self.deadlines = None   # a PredictDeadlines (one slot: the batch thread) under --predict-timeout

    def describe(self):
        what = []
        if self.app.batch_caller is not None:
            what.append("predict_batch")
        if self.app.v2_batching:
            what.append("the ONNX model (/v2 inference requests whose shapes agree)")
        wait = self._wait_text()
        lone = (f" (a lone request whose call takes under {INLINE_BELOW * 1000:g} ms runs on the "
                "I/O thread, as predict does)" if self._may_inline() else "")
        return (f"{' and '.join(what)} gets up to {self.max_size} requests a call, {wait}, on a "
                f"thread of its own{lone}; other requests: {self.inner.describe()}")

    def summary(self):
        what = " and ".join(name for name, used in (("predict_batch", self.app.batch_caller),
                                                    ("the ONNX model", self.app.v2_batching)) if used)
        return (f"{what} gets up to {self.max_size} requests a call, {self._wait_text()}; "
                f"{self.inner.summary()}")

    def _wait_text(self):
        return (f"waiting up to {self.delay * 1000:g} ms for a fuller batch" if self.delay else
                "those waiting when the model becomes free, with no added wait")

    def submit(self, conn, view):
        if self.app.batchable(view):
            if self.deadlines is not None and self.deadlines.saturated:
                answer_busy(self.loop, self.deadlines, conn, view)
                return
            self._turn.append((conn, view))
        else:
            self.inner.submit(conn, view)

    def pending(self):
        return bool(self._turn) or self.inner.pending()

    def in_flight(self):
        return len(self._turn) + self._waiting + self.inner.in_flight()

    def after_turn(self, token):
        turn = self._turn
        if turn:
            self._turn = []
            turn = self._decoded(turn)
        if turn:
            if (len(turn) == 1 and not self._waiting and not self._lone_running
                    and self._lone_seconds < INLINE_BELOW and self._may_inline()):
                conn, view, row = turn[0]
                self._lone_running = True
                self.inner.submit(conn, view, lambda view: self._answer_lone(view, row))
            else:
                self._to_thread(turn)
        return self.inner.after_turn(token)

    def _decoded(self, turn):
        """The turn's requests with their arguments, ``(connection, view, row)``; a request
        whose body cannot be decoded is answered here, at once, without waiting for the model.
        (Rows of /v2 inference requests are None: those are checked in their batch.)"""
        arguments = self.app.batch_arguments
        items = []
        for conn, view in turn:
            try:
                items.append((conn, view, arguments(view)))
            except BaseException as exc:
                conn.on_answer(view, self.app.refuse_arguments(exc, view))
        return items

    def _may_inline(self):
        # not under --predict-timeout: a stuck lone batch would hold the model from the batch thread
        return not self.delay and self.deadlines is None and getattr(self.inner, "adaptive", False)

    def _to_thread(self, items):
        self._waiting += len(items)
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="lite_serving-batch",
                                            daemon=True)
            self._thread.start()
        put = self._queue.put
        for item in items:
            put(item)

    def _answer_lone(self, view, row):
        """A batch of one, run by ``inner``."""
        try:
            self.metrics.batch_wait_seconds.observe(time.monotonic() - view.started)
            with self._model:
                return self._call([view], [row])[0]
        finally:
            self._lone_running = False

    def _call(self, views, rows):
        """The replies to one batch of one kind of request (``_model`` held)."""
        began = time.perf_counter()
        replies = self.app.answer_batch(views, rows)
        if len(views) == 1:
            self._lone_seconds = time.perf_counter() - began
        return replies

    def stop(self):
        self._queue.put(None)
        self.inner.stop()

    def _next_batch(self):
        """Wait for a request and for the model, then take up to max_size of the requests
        waiting, waiting up to ``delay`` after the first one's arrival for more. Returns with
        ``_model`` held (None, not held, once stopped)."""
        waiting = self._queue
        first = waiting.get()
        if first is None:
            return None
        self._model.acquire()
        batch = [first]
        size, delay = self.max_size, self.delay
        deadline = first[1].started + delay
        while len(batch) < size:
            try:
                if delay:
                    left = deadline - time.monotonic()
                    item = waiting.get(timeout=left) if left > 0 else waiting.get_nowait()
                else:
                    item = waiting.get_nowait()
            except queue.Empty:
                break
            if item is None:  # stopping: this batch still runs, the next call returns None
                waiting.put(None)
                break
            batch.append(item)
        return batch

    def _work(self):
        post = self.loop.call_soon_threadsafe
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                answers = self._run(batch)
            finally:
                self._model.release()
            post(self._deliver, answers)

    def _run(self, batch):
        """The answers to a batch taken from the queue: (connection, view, reply) each."""
        answers = []
        live = []
        for item in batch:
            if item[0].gone:
                answers.append((item[0], item[1], _DROPPED))
            else:
                live.append(item)
        now = time.monotonic()
        # one kind of request per model call: POST / (predict_batch) apart from /v2 inference
        for kind in (True, False):
            group = [item for item in live if (item[1].head.path == "/") is kind]
            if not group:
                continue
            views = [view for _, view, _ in group]
            for view in views:
                self.metrics.batch_wait_seconds.observe(now - view.started)
            key = None if self.deadlines is None else \
                self.deadlines.begin([(conn, view) for conn, view, _ in group])
            try:
                replies = self._call(views, [row for _, _, row in group])
            except BaseException:  # answer_batch never raises: this is a bug in lite_serving
                replies = [_failed(view) for view in views]
            if key is not None and self.deadlines.end(key):
                _returned_late(views[0])
                replies = [LATE] * len(views)
            answers += [(conn, view, reply) for (conn, view, _), reply in zip(group, replies)]
        return answers

    def _deliver(self, answers):
        for conn, view, reply in answers:
            self._waiting -= 1
            conn.on_answer(view, reply)

    def refuse_waiting(self):
        """Saturated (the batch thread is stuck): answer 503 to the requests queued for it."""
        if self.deadlines is not None and self.deadlines.saturated:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                self._waiting -= 1
                conn, view = item[:2]
                deliver(conn, view, _busy_reply(self.deadlines, view))
        if getattr(self.inner, "deadlines", None) is not None and self.inner.deadlines.saturated:
            self.inner.refuse_waiting()

    def all_deadlines(self):
        return [d for d in (self.deadlines, getattr(self.inner, "deadlines", None)) if d is not None]


def make_dispatch(config, app, loop):
    """The dispatch ``config`` asks for (``--dispatch``, ``--threads``; tasks on an asyncio loop for
    ``async def predict``), batching when the application answers some requests in batches
    (``predict_batch``, a batchable ONNX model)."""
    handle = app.handle_predict
    timeout = config.predict_timeout
    if app.async_predict:
        from lite_serving.server.async_predict import AsyncDispatch
        inner = AsyncDispatch(app, loop, max(config.threads, 1))
        if timeout:
            inner.set_timeout(timeout, app.metrics)
    elif config.dispatch == "inline" or config.threads == 0:
        inner = InlineDispatch(handle, loop)
    else:
        if config.dispatch == "threads":
            inner = PoolDispatch(handle, loop, config.threads)
        else:
            inner = AutoDispatch(handle, loop, config.threads)
        if timeout:
            inner.deadlines = PredictDeadlines(timeout, config.threads, app.metrics)
    if app.batch_caller is None and not app.v2_batching:
        return inner
    app.metrics.batching = True
    batching = BatchDispatch(inner, app, loop, config.max_batch_size, config.max_batch_delay / 1000.0)
    if timeout:
        batching.deadlines = PredictDeadlines(timeout, 1, app.metrics)
    return batching
