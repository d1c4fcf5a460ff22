"""One client connection: the HTTP/1.1 exchange as an explicit state machine.

The connection is the protocol of a :class:`~lite_serving.server.transport.Transport`
(bytes in and out, nothing else of the socket) and hands each complete request
on through one call, ``dispatch.submit(connection, view)``, getting its answer
back through one call, :meth:`HTTPConnection.on_answer`. Requests are taken
one at a time: the next request is framed only once the answer to the
previous one has been handed to the transport, so answers leave in request
order and every error takes its place among them.

States (``STATE_NAMES``) and what holds in each. The first three are the sub-states
of being idle (no request in progress: ``view`` is None; reading unless the client
sent its end), told apart by what ``buf`` and the transport hold:

``IDLE_KEEPALIVE`` nothing of a next request received (``buf[pos:]`` empty) and nothing
              queued for the client when entered. Deadline: the keep-alive timeout, from
              entering (an answer written in this turn goes out at its end); when it
              passes with output still unsent, the state becomes IDLE_BACKLOG.
``IDLE_HEAD`` ``buf[pos:]`` holds the start of the next head. Deadline: the head timeout
              from its first byte (or from entering, with pipelined bytes already held);
              408 when it passes.
``IDLE_BACKLOG`` nothing received, answers still queued for the client (below the
              pause mark). No deadline of its own: the keep-alive timeout starts once the
              output is written (``write_drained``).
``BODY``      ``view`` has an admitted head whose body is arriving into ``body`` (a sink,
              fed by ``decoder`` when chunked). Reading. Deadline: the body timeout from
              the last bytes received (re-entering BODY restarts it); 408 when it passes.
``WAITING``   ``view`` is complete and lent to the dispatch; only its answer
              (``on_answer``) moves on. No deadline. Reading ahead into ``buf`` only
              within ``--max-pending-input`` and while the memory budget has room.
``STREAMING`` ``stream`` produces the answer on a thread of its own; ``view`` is kept
              until it ends. No deadline of its own; reading ahead as in WAITING.
``DRAINING``  an answer was written but over ``--max-pending-output`` of output waits for
              the client: not reading, nothing framed, until it drains to a quarter.
``CLOSING``   the last answer is being written. No deadline of its own; input is dropped.
``LINGERING`` the last answer is out and the connection half-closed: reading and dropping
              input until the client closes or the linger deadline (``LINGER_SECONDS``)
              passes.
``CLOSED``    the socket is closed; everything the connection held is released.

Allowed transitions (``NEXT``; any state but CLOSED may go to CLOSED). An answer is
always written before the connection closes after it, and a write waits for the
end of the loop's turn, so a close found while framing or reading a body goes
through CLOSING; streams come only from the dispatch (WAITING)::

    IDLE_KEEPALIVE -> IDLE_*, BODY, WAITING, DRAINING, CLOSING, LINGERING
    IDLE_HEAD      -> IDLE_*, BODY, WAITING, DRAINING, CLOSING
    IDLE_BACKLOG   -> IDLE_*, BODY, WAITING, DRAINING, CLOSING, LINGERING
    BODY           -> IDLE_*, BODY, WAITING, DRAINING, CLOSING
    WAITING        -> IDLE_*, STREAMING, DRAINING, CLOSING, LINGERING
    STREAMING      -> IDLE_*, DRAINING, CLOSING, LINGERING
    DRAINING       -> IDLE_*
    CLOSING        -> LINGERING
    LINGERING      -> (CLOSED only)

A head that arrives whole is framed in the idle sub-state it finds (IDLE_KEEPALIVE
or IDLE_BACKLOG -> WAITING or BODY): IDLE_HEAD is entered only while a head is
incomplete, the one time its deadline means something.

Every state change goes through :meth:`_enter`, which refuses a transition the
table does not allow (:class:`IllegalTransition`: the loop closes that
connection) and chooses the deadline from the state alone (the timeout of
``ConnectionContext.timeouts[state]``, or none); no other code assigns ``state``
or ``deadline``. Whatever the state, while output
waits for the client the write timeout (``--body-timeout`` without progress)
applies. After the client's EOF nothing is read; what was received is still
answered.

A connection ends in one of two ways: gracefully (:meth:`_close_after`, after the
last answer) or by :meth:`abort`. Either way CLOSED comes with
``connection_lost``, which the loop delivers once the work that closed the
socket has returned to it (after that event, or at the end of the turn), never
inside the call that closed it: code that writes never finds the connection
closed under it. Between the two the transport is closed (its writes
are dropped) and two places look: :meth:`on_answer`, so that an answer for a
client already gone is not counted as sent, and the framing loop, which frames
nothing more for it.
"""

from time import monotonic

from lite_serving.http.parser import ChunkedDecoder, ParseError, parse_head
from lite_serving.http.replies import error_reply
from lite_serving.predictor import stream as streams
from lite_serving.predictor.request_view import RequestView
from lite_serving.process.logs import get_logger
from lite_serving.server.predict_deadline import LATE
from lite_serving.server.request_body import MemoryBody, MultipartSink

log = get_logger("lite_serving")

(IDLE_KEEPALIVE, IDLE_HEAD, IDLE_BACKLOG, BODY, WAITING, STREAMING, DRAINING, CLOSING, LINGERING,
 CLOSED) = range(10)
STATE_NAMES = ("IDLE_KEEPALIVE", "IDLE_HEAD", "IDLE_BACKLOG", "BODY", "WAITING", "STREAMING",
               "DRAINING", "CLOSING", "LINGERING", "CLOSED")
IDLE_LAST = IDLE_BACKLOG   # ``state <= IDLE_LAST``: one of the idle sub-states
_IDLE = {IDLE_KEEPALIVE, IDLE_HEAD, IDLE_BACKLOG}
_IDLE_NO_HEAD = _IDLE | {BODY, WAITING, DRAINING, CLOSING, LINGERING, CLOSED}  # nothing held
NEXT = {   # state -> the states it may go to (see the module docstring)
    IDLE_KEEPALIVE: _IDLE_NO_HEAD,
    IDLE_HEAD: _IDLE | {BODY, WAITING, DRAINING, CLOSING, CLOSED},
    IDLE_BACKLOG: _IDLE_NO_HEAD,
    BODY: _IDLE | {BODY, WAITING, DRAINING, CLOSING, CLOSED},
    WAITING: _IDLE | {STREAMING, DRAINING, CLOSING, LINGERING, CLOSED},
    STREAMING: _IDLE | {DRAINING, CLOSING, LINGERING, CLOSED},
    DRAINING: _IDLE | {CLOSED},
    CLOSING: {LINGERING, CLOSED},
    LINGERING: {CLOSED},
    CLOSED: set(),
}
# NEXT as what _enter checks, ``_ALLOWED[old][new]``: two tuple indexes, the cheapest test there is
_ALLOWED = tuple(tuple(after in NEXT[before] for after in range(len(STATE_NAMES)))
                 for before in range(len(STATE_NAMES)))

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_SECONDS = 2.0
_EMPTY = b""
_StreamBody = streams.StreamBody


class IllegalTransition(RuntimeError):
    """A state change the table ``NEXT`` does not allow: a bug in this module."""


class ConnectionContext:
    """What every connection of a server shares: settings, application, dispatch, budgets."""

    def __init__(self, app, config, dispatch, budget, buffers, metrics, access_log, loop):
        self.app = app
        self.route = app.route
        self.dispatch = dispatch
        self.budget = budget
        self.buffers = buffers
        self.metrics = metrics
        self.access_log = access_log
        self.loop = loop
        self.max_head = config.max_head_size
        self.max_headers = config.max_headers
        self.max_target = config.max_target
        self.max_body = config.max_body_size
        self.spool_size = config.spool_size
        self.max_input = config.max_pending_input
        self.keep_alive_timeout = config.keep_alive_timeout
        self.head_timeout = config.head_timeout
        self.body_timeout = config.body_timeout
        # the deadline of each state, as seconds from entering it (None: no deadline of its own)
        self.timeouts = tuple({IDLE_KEEPALIVE: config.keep_alive_timeout,
                               IDLE_HEAD: config.head_timeout, BODY: config.body_timeout,
                               LINGERING: LINGER_SECONDS}.get(state) for state in NEXT)
        self.draining = False
        self.admit = None       # callable(head) → a refusal reply or None, before any body is read
        self.scratch = bytearray(256 * 1024)   # receive area for spooled bodies (one thread reads)
        self.connections = {}                  # id(connection) → connection


class HTTPConnection:
    """The protocol of one client connection (I/O thread only)."""

    __slots__ = ("ctx", "transport", "peer", "state", "buf", "pos", "counted", "view", "body",
                 "decoder", "stream", "close_after", "eof", "deadline", "recv_into", "log_prefix",
                 "fresh")

    def __init__(self, ctx, transport):
        self.ctx = ctx
        self.transport = transport
        self.peer = transport.peer
        self.log_prefix = ctx.access_log.prefix(self.peer) if ctx.access_log.enabled else None
        self.state = IDLE_KEEPALIVE
        self.buf = _EMPTY          # bytes received and not yet framed, from ``pos`` on
        self.pos = 0
        self.counted = 0           # of ``buf``, bytes counted in the memory budget
        self.view = None           # the request in progress
        self.body = None           # MemoryBody / MultipartSink being filled (BODY)
        self.decoder = None        # ChunkedDecoder of a chunked body (BODY)
        self.stream = None         # StreamBody being sent (STREAMING)
        self.close_after = False   # the answer in progress is the last one
        self.eof = False           # the client closed its sending side
        self.recv_into = False     # the transport reads straight into get_buffer() (BODY)
        self.deadline = None
        self.fresh = True          # no request head received yet
        transport.protocol = self
        self._enter(IDLE_KEEPALIVE)

    def __repr__(self):
        return f"<HTTPConnection {self.peer} {STATE_NAMES[self.state]}>"

    @property
    def gone(self):
        """The client closed the connection, or its sending side (read by the batch thread: a
        request it need not run). A client that half-closes and still waits for its answer is
        rare; nginx (499) and uvicorn (``http.disconnect``) take end-of-file as leaving too."""
        return self.eof or self.state == CLOSED

    # -- transitions: the one place states change and deadlines are chosen ----------

    def _enter(self, state):
        if not _ALLOWED[self.state][state]:
            raise IllegalTransition(f"{self!r}: no transition to {STATE_NAMES[state]}")
        self.state = state
        timeout = self.ctx.timeouts[state]
        if timeout is None:
            self.deadline = None
        else:
            self.deadline = self.ctx.loop.now + timeout
        if state > IDLE_LAST:   # (the request states first: the most frequent, with nothing to do)
            if state >= DRAINING:
                self._entered_end(state)
            return
        self.close_after = False
        transport = self.transport
        if not transport.reading and not self.eof:
            transport.set_reading(True)

    def _entered_end(self, state):
        """What entering DRAINING, CLOSING, LINGERING or CLOSED does beyond its deadline."""
        if state == DRAINING:
            self.transport.set_reading(False)
        elif state == LINGERING:
            self.buf, self.pos = _EMPTY, 0
            self._count_input()
            self.transport.set_reading(True)

    def _enter_idle(self):
        """No request in progress: the idle sub-state that what is held now makes."""
        if self.pos < len(self.buf):
            self._enter(IDLE_HEAD)
        elif self.transport.out:
            self._enter(IDLE_BACKLOG)  # the keep-alive timer starts once it is written
        else:
            self._enter(IDLE_KEEPALIVE)

    def check_deadline(self, now):
        """Called about once a second: end what has waited too long."""
        transport = self.transport
        if transport.unsent and now - transport.progress_at > self.ctx.body_timeout:
            self.abort()  # the client stopped reading its answers
            return
        if self.deadline is None or now < self.deadline:
            return
        state = self.state
        if state == IDLE_HEAD or state == BODY:
            self._refuse(408, "timed out waiting for the request")
        elif state == IDLE_KEEPALIVE and transport.unsent:
            self._enter(IDLE_BACKLOG)  # answers still going out: the keep-alive timer starts after
        else:  # an idle keep-alive connection, or a linger that has lasted long enough
            self.abort()

    # -- bytes in ------------------------------------------------------------------

    def get_buffer(self):
        """Where the transport receives the next bytes of a Content-Length body (BODY)."""
        body = self.body
        want = body.length - body.got
        if type(body) is MemoryBody:
            return body.room(want)
        scratch = self.ctx.scratch
        return memoryview(scratch)[:min(want, len(scratch))]

    def buffer_updated(self, n):
        body = self.body
        if type(body) is MemoryBody:
            body.filled(n)
        elif not body.write(memoryview(self.ctx.scratch)[:n]):
            self._spool_failed()
            return
        self._enter(BODY)  # the body timeout starts again
        if body.got == body.length:
            self._body_complete()
            self._next_request()

    def data_received(self, data):
        state = self.state
        if state == IDLE_HEAD:
            self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
            self.pos = 0
            self._next_request()
        elif state <= IDLE_LAST:  # a head begins (IDLE_HEAD once it is known to be incomplete)
            self.buf = data
            self.pos = 0
            self._next_request()
        elif state == BODY:  # a chunked body (Content-Length bodies come through get_buffer)
            self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
            self.pos = 0
            self._chunked_data()
            self._next_request()
        elif state >= CLOSING:
            return  # the last answer is going out, or lingering: what the client sends is dropped
        else:  # read ahead while the answer is pending, within the budgets
            self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
            self.pos = 0
            self._count_input()
            ctx = self.ctx
            if len(self.buf) >= ctx.max_input or ctx.budget.exhausted:
                self.transport.set_reading(False)

    def eof_received(self):
        """The client sent all it will: finish what is in progress, then close."""
        self.eof = True
        state = self.state
        if state == BODY or state == LINGERING or state <= IDLE_LAST and not self.transport.unsent:
            self.abort()  # a body that can never be complete, lingering over, or nothing in progress
            return
        self.transport.set_reading(False)

    def _count_input(self):
        """Keep the memory budget in step with the unframed bytes held in ``buf``."""
        held = len(self.buf) - self.pos
        if held != self.counted:
            self.ctx.budget.held += held - self.counted
            self.counted = held

    # -- framing requests -------------------------------------------------------------

    def _next_request(self):
        """Frame requests from ``buf`` while the connection is idle (pipelined ones one by one).

        Answers found on the way (cheap routes, errors) are written in the loop; only
        the dispatch's answers (``on_answer``) and the transport's events call this.
        """
        ctx = self.ctx
        budget = ctx.budget
        transport = self.transport
        while self.state <= IDLE_LAST and not transport.closed:  # (closed: see on_answer's except)
            data, pos = self.buf, self.pos
            if pos >= len(data):
                break
            try:
                head = parse_head(data, pos, ctx.max_head, ctx.max_headers, ctx.max_target)
            except ParseError as exc:
                self.buf, self.pos = _EMPTY, 0
                self._refuse(exc.status, exc.message)
                break
            if head is None:
                if self.state != IDLE_HEAD:
                    self._enter(IDLE_HEAD)  # the head is incomplete: its timeout starts
                break
            self.pos = pos = head.end
            self.fresh = False
            if ctx.draining:
                head.keep_alive = False  # shutting down: this connection ends after its answer
            if ctx.admit is not None:
                refusal = ctx.admit(head)
                if refusal is not None:
                    self._refuse_head(head, refusal)
                    continue
            if head.chunked:
                self._start_chunked(head)
                continue
            length = head.content_length
            if length <= 0:
                self._route(RequestView(head, _EMPTY, self.peer, budget, 0, ctx.loop.now))
                continue
            if length > ctx.max_body:
                self._refuse(413, f"request body of {length} bytes is over --max-body-size "
                                  f"({ctx.max_body} bytes)", head)
                break
            if budget.held + length > budget.limit:  # MemoryBudget.reserve, on the hot path
                self._refuse_busy(head)
                break
            budget.held += length
            if len(data) - pos >= length:
                self.pos = pos + length
                self._route(RequestView(head, data[pos:pos + length], self.peer, budget, length,
                                        ctx.loop.now))
            else:
                self._start_body(head, length)
        if self.state <= BODY and self._framing_ends():
            return
        if self.counted or self.pos < len(self.buf):
            self._count_input()

    def _framing_ends(self):
        """After framing, idle or reading a body: True when the connection is to end (the
        client's EOF, or shutting down with nothing left to answer)."""
        if self.state == BODY:
            if self.eof:
                self.abort()  # the client has sent all it will: this body can never be complete
            return self.eof
        if self.pos >= len(self.buf) and self.buf:
            self.buf, self.pos = _EMPTY, 0
        if self.eof:  # nothing more can come: close once what is left to send is out
            if not self.transport.unsent:
                self.abort()
            else:
                self.transport.drain_wanted = True
            return True
        if self.ctx.draining and not self.buf:
            self._close_after()  # shutting down: every request received has its answer
            return True
        return False

    def _new_view(self, head, reserved):
        """The request whose body is about to be read (BODY)."""
        ctx = self.ctx
        view = self.view = RequestView(head, _EMPTY, self.peer, ctx.budget, reserved, ctx.loop.now)
        ctx.metrics.in_flight += 1
        return view

    def _start_body(self, head, length):
        """A Content-Length body still arriving: to a growing buffer or, for a large form, a file."""
        ctx = self.ctx
        data, pos = self.buf, self.pos
        self.buf, self.pos = _EMPTY, 0
        view = self._new_view(head, length)
        if length > ctx.spool_size and _is_multipart(head.content_type):
            ctx.budget.give(length)   # the body is parsed as it arrives, its files go to disk
            view.reserved = 0
            sink = MultipartSink(head.content_type, length)
            if not sink.write(data[pos:]):
                self._spool_failed()
                return
        else:
            sink = MemoryBody(ctx.buffers, length)
            sink.write(data[pos:])
        self.body = view.sink = sink
        self.recv_into = True
        self._enter(BODY)
        if head.expect_continue and len(data) == pos:
            self.transport.write(CONTINUE)

    def _start_chunked(self, head):
        ctx = self.ctx
        view = self._new_view(head, 0)
        view.sink = self.body = MemoryBody(ctx.buffers, -1)
        self.decoder = ChunkedDecoder(ctx.max_body, ctx.max_head, ctx.max_headers)
        self._enter(BODY)
        if head.expect_continue and self.pos == len(self.buf):
            self.transport.write(CONTINUE)
        self._chunked_data()

    def _chunked_data(self):
        """Decode what ``buf`` holds of a chunked body into its sink; complete it at the end."""
        decoder = self.decoder
        try:
            self.pos = decoder.feed(self.buf, self.pos)
        except ParseError as exc:
            message = exc.message
            if exc.status == 413:
                message = f"chunked request body is over --max-body-size ({self.ctx.max_body} bytes)"
            self._refuse(exc.status, message, self.view.head)
            return
        piece = decoder.take()
        if piece and not self._chunked_store(piece):
            return
        self._enter(BODY)  # the body timeout starts again
        if decoder.done:
            self._body_complete()

    def _chunked_store(self, piece):
        """Keep a decoded piece, counted in the budget; a large form moves to a file."""
        ctx, view, sink = self.ctx, self.view, self.body
        if type(sink) is MemoryBody:
            if sink.got + len(piece) > ctx.spool_size and _is_multipart(view.head.content_type):
                spooled = MultipartSink(view.head.content_type, -1, sink.content())
                sink.release(None)
                ctx.budget.give(view.reserved)
                view.reserved = 0
                view.sink = self.body = sink = spooled
            elif not ctx.budget.reserve(len(piece)):
                self._refuse_busy(view.head)
                return False
            else:
                view.reserved += len(piece)
        if not sink.write(piece):
            self._spool_failed()
            return False
        return True

    def _body_complete(self):
        view, sink = self.view, self.body
        self.body = None
        self.recv_into = False
        if self.decoder is not None:
            view.trailers, self.decoder = self.decoder.trailers, None
        if type(sink) is MultipartSink:
            if not sink.finish():
                self._spool_failed()
                return
            view.spool = sink.content()
        else:
            view.body = sink.content()
        self._route(view)

    def _route(self, view):
        """A complete request: answered here (cheap routes, errors) or lent to the dispatch."""
        ctx = self.ctx
        if self.view is not view:  # framed just now, not through BODY: now it is in flight
            self.view = view
            ctx.metrics.in_flight += 1
        reply = ctx.route(view)
        if reply is None:
            self._enter(WAITING)
            ctx.dispatch.submit(self, view)
        else:
            self.on_answer(view, reply, False)

    # -- answers -----------------------------------------------------------------------

    def on_answer(self, view, reply, frame_next=True):
        """The answer to ``view``: from the dispatch (I/O thread), or found while framing
        (``frame_next`` False: the framing loop goes on by itself)."""
        if reply is LATE:  # predict returned past --predict-timeout: its client was answered 504
            return
        transport = self.transport
        if transport is None or transport.closed or not reply[0]:
            # the client left (status 0: dropped unanswered): nothing is sent, nothing counted
            if type(reply[1]) is _StreamBody:
                reply[1].close()
            self._finish(view)
            if self.state != CLOSED:
                self._close_after()
            return
        try:
            status, data, close = reply
            if close:
                self.close_after = True
            if type(data) is _StreamBody:
                self._start_stream(view, status, data)
                return
            self._finish(view, status, len(data))  # first: when the client reads, the request
            self.transport.write(data)               # holds nothing
            self._after_answer()
            if frame_next and self.state <= IDLE_LAST and (self.pos < len(self.buf) or self.eof
                                                           or self.ctx.draining):
                self._next_request()
        except Exception:
            log.exception("internal error while answering a request; closing its connection")
            self.abort()

    def _after_answer(self):
        """The answer is with the transport: close, wait for output to drain, or frame the next."""
        if self.close_after:
            self._close_after()
        elif self.transport.write_paused:
            self._enter(DRAINING)
        elif self.pos < len(self.buf):  # _enter_idle(), inlined: this runs once a request
            self._enter(IDLE_HEAD)
        elif self.transport.out:
            self._enter(IDLE_BACKLOG)
        else:
            self._enter(IDLE_KEEPALIVE)

    def _finish(self, view, status=None, sent=0):
        """The one place a request ends (once): counted, logged, everything it holds released.

        ``status`` None: the request ended without an answer of its own being written;
        ``sent``: the bytes of its answer.
        """
        if not view.release():
            return  # ended before
        if self.view is view:
            self.view = None
        ctx = self.ctx
        metrics = ctx.metrics
        metrics.in_flight -= 1
        if status is not None:
            metrics.by_class[status // 100] += 1
            seconds = monotonic() - view.started
            metrics.request_seconds.observe(seconds)
            if self.log_prefix is not None:  # the access log is on: one tuple, formatted later
                ctx.access_log.lines.append((self.log_prefix, view.head, status, seconds,
                                             view.reason, sent))

    def _refuse(self, status, message, head=None):
        """Answer an error the server itself finds; the connection closes after it."""
        self.body = self.decoder = None  # a body being read is released with its view
        self.recv_into = False
        view = self.view
        if view is not None and self.state <= BODY:
            self._finish(view)
        ctx = self.ctx
        ctx.metrics.by_class[status // 100] += 1
        data = error_reply(status, message, head)[1]
        if self.log_prefix is not None:  # every answer has its access line, refusals too
            if view is None:
                started = ctx.loop.now
            else:
                started, head = view.started, head or view.head
            ctx.access_log.record(self.log_prefix, head, status, monotonic() - started, message,
                                  len(data))
        self.transport.write(data)
        self._close_after()

    def _refuse_head(self, head, reply):
        """A request refused on its head alone (``ctx.admit``): answered in turn, its body never
        read. With a body to follow, the connection closes after the answer: that body would
        otherwise be taken for the next request."""
        ctx = self.ctx
        view = self.view = RequestView(head, _EMPTY, self.peer, ctx.budget, 0, ctx.loop.now)
        ctx.metrics.in_flight += 1
        if head.chunked or head.content_length > 0:
            self.close_after = True
        view.reason = "no valid API key" if reply[0] == 401 else "refused before its body was read"
        self.on_answer(view, reply, False)

    def _refuse_busy(self, head):
        self._refuse(503, "the server holds too many request bodies to take this one now; "
                          "retry shortly", head)

    def _spool_failed(self):
        self._refuse(507, "the server cannot store this upload now",
                     self.view.head if self.view is not None else None)

    # -- streams -----------------------------------------------------------------------

    def _start_stream(self, view, status, stream):
        ctx = self.ctx
        self.view = view
        self.stream = stream
        self._enter(STREAMING)
        ctx.metrics.by_class[status // 100] += 1
        if ctx.access_log.enabled:
            ctx.access_log.record(self.log_prefix, view.head, status, monotonic() - view.started,
                                  view.reason, len(stream.head))
        stream.handed = len(stream.head)
        self.transport.write(stream.head)
        post = ctx.loop.call_soon_threadsafe
        streams.start(stream, lambda data: post(self._stream_post, stream, data))

    def _stream_post(self, stream, data):
        """A piece of ``stream`` (or END / ABORT) from its thread (I/O thread)."""
        if data is streams.END or data is streams.ABORT:
            if self.stream is stream:
                self.stream = None
            view = self.view
            if view is not None and self.state in (STREAMING, CLOSED):
                self._finish(view)
            if self.state != STREAMING:
                return
            if data is streams.ABORT:
                self.abort()  # the pieces written so far go out first (Transport.abort)
                return
            if not stream.chunked:  # HTTP/1.0: the end of the body is the end of the connection
                self.close_after = True
            self._after_answer()
            if self.state <= IDLE_LAST:
                self._next_request()
            return
        if self.stream is not stream or self.state != STREAMING:
            return
        stream.handed += len(data)
        transport = self.transport
        transport.write(data)
        transport.drain_wanted = True  # the producer's window moves as its pieces go out
        self._stream_progress()

    def _stream_progress(self):
        stream = self.stream
        if stream is not None and self.transport is not None:
            stream.written = stream.handed - self.transport.unsent
            if stream.backlog() < streams.LOW_WATER:
                stream.window.set()

    # -- flow control from the transport --------------------------------------------------

    def pause_writing(self):
        pass  # the answer path sees transport.write_paused and enters DRAINING

    def resume_writing(self):
        self._stream_progress()
        if self.state == DRAINING:
            self._enter_idle()
            self._next_request()

    def write_drained(self):
        state = self.state
        if self.stream is not None:
            self._stream_progress()
        if state == CLOSING:
            self._linger()
        elif state <= IDLE_LAST:
            if self.eof:
                self.abort()  # nothing more can come, and everything is written
            elif state == IDLE_HEAD:
                pass  # a head is arriving: its deadline stands
            elif self.ctx.draining:
                self._close_after()
            else:  # the keep-alive timer starts when the last answer has been written
                self._enter(IDLE_KEEPALIVE)

    # -- the two ways a connection ends ----------------------------------------------------

    def _close_after(self):
        """Graceful close: once the last answer is written, half-close and linger, then close."""
        if not self.transport.unsent:
            self._linger()
        else:
            self._enter(CLOSING)
            self.transport.drain_wanted = True

    def _linger(self):
        """Closing at once with unread input would reset the connection and could destroy the
        answer before the client reads it: stop sending, drop what the client still sends."""
        if self.eof or not self.transport.shutdown_write():
            self.abort()
            return
        self._enter(LINGERING)

    def abort(self):
        """Close the socket now; connection_lost releases the rest."""
        transport = self.transport
        if transport is not None:
            transport.abort()

    def connection_lost(self):
        """The socket is closed: release what the connection holds (a view lent to the dispatch
        or to a stream is released when its answer or its stream's end comes back)."""
        state = self.state
        self._enter(CLOSED)
        self.transport = None
        ctx = self.ctx
        ctx.connections.pop(id(self), None)
        ctx.metrics.connections = len(ctx.connections)
        self.buf, self.pos = _EMPTY, 0
        if self.counted:
            ctx.budget.give(self.counted)
            self.counted = 0
        if self.stream is not None:
            self.stream.cancel()
        view = self.view
        if view is not None and state != WAITING and state != STREAMING:
            self._finish(view)
        self.body = self.decoder = None
        self.recv_into = False

    def drain(self):
        """Shutting down: close now when nothing is in progress, else after the current answers.

        A connection accepted just before, whose first request may be on its way, is left
        to its head deadline: that request is answered (and the connection closed after it),
        where closing at once would reset it."""
        if self.state == IDLE_KEEPALIVE and not self.transport.unsent and not self.fresh:
            self.abort()


def _is_multipart(content_type):
    return content_type is not None and content_type[:19].lower() == "multipart/form-data"
