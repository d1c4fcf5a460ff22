"""``async def predict``: coroutines on one asyncio event loop, in a thread of its own.

An I/O-bound predict (another service, a database, an LLM API) then has as
many requests in flight as arrive, without a thread each: every ``POST /``
becomes a task on the loop, and its answer goes back to the I/O thread as a
thread-run predict's does. The same loop runs ``async def setup(self)``
before the server is ready (state made there, such as an
``httpx.AsyncClient``, stays usable by every request), ``async def
predict_batch`` (the batch thread waits for it), and async generators given
as streamed bodies (``Response(agen)``, ``event_stream(agen)``).

This module, and asyncio with it, is imported only for a predictor that uses
one of those.
"""

import asyncio
import collections
import threading
import time

from lite_serving.http.replies import error_reply
from lite_serving.http.request_ids import RequestSlot, current_request
from lite_serving.predictor.stream import ABORT, StreamBody, finish, held_back, log_failure, send
from lite_serving.process.logs import get_logger
from lite_serving.server.dispatch import PoolDispatch, _returned_late, answer_busy
from lite_serving.server.predict_deadline import LATE, PredictDeadlines

log = get_logger("lite_serving")

ASYNC_GRACE = 1.0   # seconds past --predict-timeout before the I/O loop steps in (see set_timeout)

_loops = []
_loops_lock = threading.Lock()


class EventLoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="lite_serving-asyncio", daemon=True)
        self.thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine):
        """Run ``coroutine`` on the loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def call_soon(self, fn, *args):
        """Call ``fn(*args)`` on the loop's thread (from any thread)."""
        self.loop.call_soon_threadsafe(fn, *args)


def event_loop_thread():
    """The process's one :class:`EventLoopThread`, started on first use."""
    with _loops_lock:
        if not _loops:
            _loops.append(EventLoopThread())
        return _loops[0]


def run_on_loop(function):
    """``function`` (an ``async def``) as a plain function that runs it on the loop and waits."""
    loop = event_loop_thread()

    def call(*args, **kwargs):
        return loop.run(function(*args, **kwargs))
    return call


class AsyncDispatch(PoolDispatch):
    """``POST /`` as tasks on the asyncio loop thread; other requests (/v2 inference) on the pool.

    Tasks start in the order requests were handed over; each answer is posted
    back to the I/O thread as soon as its task ends.
    """

    def __init__(self, app, loop, threads):
        PoolDispatch.__init__(self, app.handle_predict, loop, threads)
        self.app = app
        self.event_loop = event_loop_thread()
        self._incoming = collections.deque()   # (connection, view), I/O thread → loop thread
        self._start_pending = False
        self._tasks = set()           # asyncio keeps weak references only
        self.timeout = 0              # --predict-timeout: a task past it is cancelled, 504
        self.loop_deadlines = None    # the I/O loop's backstop for a task that blocks its loop

    def describe(self):
        return ("async predict runs as tasks on one asyncio event loop in a thread of its own, "
                "as many at a time as requests arrive")

    def summary(self):
        return "async predict runs as tasks on one asyncio event loop"

    def set_timeout(self, timeout, metrics):
        """``--predict-timeout``: the task is cancelled at ``timeout`` by its own loop; and the
        I/O loop answers 504 one second later, counting the asyncio loop as stuck, if that loop
        was held (a coroutine that blocks it cannot be cancelled)."""
        self.timeout = timeout
        self.loop_deadlines = PredictDeadlines(
            timeout, 1, metrics, what="the asyncio loop of async predict", grace=ASYNC_GRACE)

    def all_deadlines(self):
        return PoolDispatch.all_deadlines(self) + (
            [self.loop_deadlines] if self.loop_deadlines is not None else [])

    def refuse_waiting(self):
        PoolDispatch.refuse_waiting(self)   # /v2 requests queued for the pool; tasks wait on

    def submit(self, conn, view, handle=None):
        if handle is not None or view.head.path != "/":
            PoolDispatch.submit(self, conn, view, handle)
            return
        if self.loop_deadlines is not None and self.loop_deadlines.saturated:
            answer_busy(self.loop, self.loop_deadlines, conn, view)
            return
        self.submitted += 1
        self._incoming.append((conn, view))
        if not self._start_pending:
            self._start_pending = True
            self.event_loop.call_soon(self._start_tasks)

    def _start_tasks(self):
        self._start_pending = False  # before taking: a request added from now on posts again
        incoming = self._incoming
        create, tasks = self.event_loop.loop.create_task, self._tasks
        while incoming:
            conn, view = incoming.popleft()
            task = create(self._answer(conn, view))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _answer(self, conn, view):
        app = self.app
        head = view.head
        current_request.set(RequestSlot(head))  # this task's own context and slot: emit_event
                                                # finds its request
        began = time.perf_counter()
        key = None
        try:
            if self.timeout:
                key = self.loop_deadlines.begin([(conn, view)])
                reply = await self._within_timeout(view)
            else:
                reply = app._encode(await app.caller(view), head)
        except BaseException as exc:  # as for predict: whatever escapes is this request's 500
            reply = app._failure(exc, view)
        finally:
            app.metrics.predict_seconds.observe(time.perf_counter() - began)
        if key is not None and self.loop_deadlines.end(key):
            _returned_late(view)   # the I/O loop answered 504 while this loop was held
            reply = LATE
        self.post_answer(conn, view, reply)

    async def _within_timeout(self, view):
        """predict's answer, or 504 once it has run ``--predict-timeout``: the task is cancelled
        (unlike a thread, a coroutine can be stopped where it awaits)."""
        app = self.app
        task = asyncio.ensure_future(app.caller(view))   # in this task's context
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        finally:
            if not task.done():
                task.cancel()
        if done:
            return app._encode(task.result(), view.head)
        app.metrics.predict_timeouts += 1
        log.error("async predict ran past --predict-timeout (%g s): cancelled, answered 504",
                  self.timeout)
        return error_reply(504, f"predict did not answer within --predict-timeout "
                                f"({self.timeout:g} s)", view.head)


# -- streamed bodies from async generators ------------------------------------------------------

class _LoopWindow:
    """The stream's window (``set``/``clear``/``wait``), awaited on the loop thread and opened
    from the I/O thread; it posts to the loop only while the producer waits. Opened on a
    cancelled stream (the client left), it cancels the producing task, wherever it awaits."""

    __slots__ = ("loop", "stream", "task", "event", "waiting")

    def __init__(self, loop, stream):
        self.loop = loop
        self.stream = stream
        self.task = None
        self.event = asyncio.Event()
        self.waiting = False

    def set(self):
        if self.stream.cancelled:
            if self.task is not None:
                self.loop.call_soon_threadsafe(self.task.cancel)
        elif self.waiting:
            self.loop.call_soon_threadsafe(self.event.set)

    def clear(self):
        self.event.clear()
        self.waiting = True  # before the producer looks at the backlog again: no wake-up is lost

    async def wait(self, timeout):
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self.waiting = False


def async_stream_body(pieces):
    """A :class:`StreamBody` of an async iterable; closing it before it runs closes the iterable
    on the loop (``aclose``)."""
    def close():
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            asyncio.run_coroutine_threadsafe(aclose(), event_loop_thread().loop)
    return StreamBody(pieces, on_close=close)


def start_stream(stream, post):
    """Produce ``stream`` (an async iterable) as a task on the loop, in its request's context."""
    event_loop = event_loop_thread()
    event_loop.call_soon(_start_pump, event_loop.loop, stream, post)


def _start_pump(loop, stream, post):
    """On the loop thread, where the window's asyncio.Event is made (Python 3.9 binds it to the
    loop of the thread making it)."""
    window = stream.window = _LoopWindow(loop, stream)
    task = window.task = loop.create_task(_pump(stream, post))
    if stream.cancelled:  # the client left before the task existed
        task.cancel()
    _pumping.add(task)
    task.add_done_callback(_pumping.discard)


_pumping = set()


async def _pump(stream, post):
    """The async twin of ``stream.pump``: frame and post each piece, END or ABORT at the end."""
    if stream.context is not None:
        for variable, value in stream.context.items():
            variable.set(value)
    end = ABORT
    pieces = stream.pieces
    try:
        async for piece in pieces:
            if not send(stream, piece, post):
                break
            while held_back(stream):
                stream.window.clear()
                if held_back(stream):
                    await stream.window.wait(1.0)
        end = finish(stream, post)
    except BaseException as exc:
        if not stream.cancelled:  # else the client left: nothing failed
            log_failure(stream, exc)
    finally:
        stream.on_close = None
        aclose = getattr(pieces, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        except BaseException:
            log.exception("closing the streamed body failed")
        finally:
            post(end)
