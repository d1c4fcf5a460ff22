"""The connection's state machine driven in-process: one test per allowed transition.

An :class:`HTTPConnection` is built as the server builds it (a ConnectionContext
and a transport), with a fake transport and a fake loop whose clock the test
moves: bytes are handed to ``data_received`` / ``get_buffer``, answers to
``on_answer``, and the end of a turn is played by hand (``flush``: the socket
takes what was written; ``end_turn``: ``connection_lost`` of what was closed).
Each test brings the connection to a state, triggers one transition, and checks
the transition was taken (``path``) and what the new state does: its deadline,
reading on or off, what was written. ``test_every_allowed_transition_has_a_test``
keeps the table and the tests in step.
"""

import collections
import selectors
import socket
import types

import pytest

from lite_serving.predictor import stream as streams
from lite_serving.server.connection import (
    BODY,
    CLOSED,
    CLOSING,
    DRAINING,
    IDLE_BACKLOG,
    IDLE_HEAD,
    IDLE_KEEPALIVE,
    LINGER_SECONDS,
    LINGERING,
    NEXT,
    STATE_NAMES,
    STREAMING,
    WAITING,
    ConnectionContext,
    HTTPConnection,
    IllegalTransition,
)
from lite_serving.server.loop import EventLoop
from lite_serving.server.request_body import BodyBuffers, MemoryBudget
from lite_serving.server.transport import Transport

KEEP_ALIVE, HEAD_TIMEOUT, BODY_TIMEOUT = 5.0, 7.0, 11.0   # distinct: a deadline names its timeout
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GET = b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"
GET_START, GET_REST = GET[:18], GET[18:]   # a head that arrives in two reads
PARTIAL = b"GET /ok HTTP/1.1\r\nHo"
POST = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n"


class FakeLoop:
    """The loop as a connection sees it: a clock, posted calls and the closes of the turn."""

    def __init__(self):
        self.now = 1000.0
        self.corked = True
        self.corked_transports = []
        self.closed_this_turn = []
        self.posted = []

    def call_soon_threadsafe(self, fn, *args):
        self.posted.append((fn, args))


class FakeTransport:
    """Output held until ``flush`` (the end of the turn), a queue the socket has not taken
    (``backlog``), reading switched on and off, and ``abort`` as the real one: the protocol
    hears ``connection_lost`` only from the loop (here ``Rig.end_turn``)."""

    peer = ("127.0.0.1", 40000)

    def __init__(self, loop):
        self.loop = loop
        self.protocol = None
        self.held = b""              # written during the turn
        self.out = collections.deque()   # queued: the socket did not take it
        self.unsent = 0
        self.sent = b""
        self.reading = True
        self.write_paused = False
        self.closed = False
        self.shut = False
        self.drain_wanted = False
        self.progress_at = loop.now

    def write(self, data):
        if self.closed:
            return
        self.held += data
        self.unsent += len(data)

    def backlog(self, n=100, paused=False):
        """Earlier output the client has not read yet."""
        self.out.append(b"x" * n)
        self.unsent += n
        self.write_paused = paused

    def flush(self):
        """The end of the turn: the socket takes what was written (nothing queued before it)."""
        if self.out or not self.held:
            return
        self.sent += self.held
        self.unsent -= len(self.held)
        self.held = b""
        if self.drain_wanted:
            self.drain_wanted = False
            self.protocol.write_drained()

    def drain(self):
        """The client reads everything queued: resume (when paused), then drained."""
        self.out.clear()
        self.sent += self.held
        self.held = b""
        self.unsent = 0
        self.progress_at = self.loop.now
        if self.write_paused:
            self.write_paused = False
            self.protocol.resume_writing()
        if not self.closed:
            self.drain_wanted = False
            self.protocol.write_drained()

    def set_reading(self, on):
        self.reading = on

    def shutdown_write(self):
        if self.closed:
            return False   # the real one: shutdown() fails on the closed socket
        self.shut = True
        return True

    def abort(self):
        if self.closed:
            return
        self.closed = True
        self.out.clear()
        self.held = b""
        self.unsent = 0
        protocol, self.protocol = self.protocol, None
        self.loop.closed_this_turn.append(protocol.connection_lost)


class Recorded(HTTPConnection):
    """HTTPConnection that keeps the transitions it made, as (from, to)."""

    def _enter(self, state):
        self.path.append((self.state, state))
        HTTPConnection._enter(self, state)


def route(view):
    """POST / goes to the dispatch; GET /close is answered and closes; the rest answered at once."""
    head = view.head
    if head.method == "POST" and head.path == "/":
        return None
    return 200, OK, head.path == "/close"


class Rig:
    def __init__(self):
        self.loop = FakeLoop()
        self.submitted = []
        config = types.SimpleNamespace(
            max_head_size=8192, max_headers=100, max_target=8192, max_body_size=1 << 20,
            spool_size=1 << 20, max_pending_input=1 << 16, keep_alive_timeout=KEEP_ALIVE,
            head_timeout=HEAD_TIMEOUT, body_timeout=BODY_TIMEOUT)
        app = types.SimpleNamespace(route=route)
        dispatch = types.SimpleNamespace(submit=lambda conn, view: self.submitted.append(view))
        self.metrics = types.SimpleNamespace(in_flight=0, by_class=[0] * 6, connections=0,
                                             request_seconds=types.SimpleNamespace(
                                                 observe=lambda seconds: None))
        access_log = types.SimpleNamespace(enabled=False)
        self.ctx = ConnectionContext(app, config, dispatch, MemoryBudget(1 << 30), BodyBuffers(),
                                     self.metrics, access_log, self.loop)
        self.transport = FakeTransport(self.loop)
        self.conn = conn = Recorded.__new__(Recorded)
        conn.path = []
        conn.__init__(self.ctx, self.transport)   # as the server builds it (listener.py)
        self.ctx.connections[id(conn)] = conn

    @property
    def state(self):
        return self.conn.state

    def later(self, seconds):
        self.loop.now += seconds
        return self.loop.now

    def receive(self, data):
        """Bytes from the client, as the transport hands them over."""
        conn = self.conn
        while data and conn.recv_into:
            room = conn.get_buffer()
            n = min(len(room), len(data))
            room[:n] = data[:n]
            room.release()
            data = data[n:]
            conn.buffer_updated(n)
        if data:
            conn.data_received(data)

    def answer(self, reply=(200, OK, False)):
        self.conn.on_answer(self.submitted.pop(0), reply)

    def end_turn(self):
        self.transport.flush()
        closed, self.loop.closed_this_turn = self.loop.closed_this_turn, []
        for connection_lost in closed:
            connection_lost()

    def took(self, before, after, stays=True):
        """``before`` -> ``after`` was taken (and, with ``stays``, the connection is there now)."""
        assert (before, after) in self.conn.path, [
            (STATE_NAMES[a], STATE_NAMES[b]) for a, b in self.conn.path]
        if stays:
            assert self.state == after, STATE_NAMES[self.state]

    # -- reaching a state ---------------------------------------------------------------

    def waiting(self):
        self.receive(POST + b"abcd")
        assert self.state == WAITING and self.conn.deadline is None and self.submitted

    def streaming(self, monkeypatch, chunked=True):
        started = []
        monkeypatch.setattr(streams, "start", lambda stream, post: started.append(stream))
        self.waiting()
        stream = streams.StreamBody(iter(()))
        stream.head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        stream.chunked = chunked
        self.answer((200, stream, False))
        assert self.state == STREAMING and started == [stream]
        return stream

    def draining(self):
        self.waiting()
        self.transport.backlog(100, paused=True)
        self.answer()
        assert self.state == DRAINING

    def closing(self):
        self.receive(b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n")
        assert self.state == CLOSING

    def closed(self):
        assert self.state == CLOSED and self.conn.transport is None
        assert id(self.conn) not in self.ctx.connections


TRANSITIONS = {}
MOVES_ON = "moves on"   # returned by a scenario whose connection leaves the state it entered


def transition(before, after):
    def register(fn):
        assert (before, after) not in TRANSITIONS
        TRANSITIONS[before, after] = fn
        return fn
    return register


# -- IDLE_KEEPALIVE ------------------------------------------------------------------------

@transition(IDLE_KEEPALIVE, IDLE_KEEPALIVE)
def _(rig, _mp):
    assert rig.conn.deadline == rig.loop.now + KEEP_ALIVE   # from the connection's start
    now = rig.later(3)
    rig.conn.write_drained()   # the last answer is out: the keep-alive timer starts again
    assert rig.conn.deadline == now + KEEP_ALIVE


@transition(IDLE_KEEPALIVE, IDLE_HEAD)
def _(rig, _mp):
    now = rig.later(1)
    rig.receive(PARTIAL)
    assert rig.conn.deadline == now + HEAD_TIMEOUT and rig.transport.reading


@transition(IDLE_KEEPALIVE, IDLE_BACKLOG)
def _(rig, _mp):
    rig.transport.backlog()   # an answer the socket could not take at the end of its turn
    rig.conn.check_deadline(rig.later(KEEP_ALIVE + 1))
    assert rig.conn.deadline is None and not rig.transport.closed   # kept: keep-alive starts after


@transition(IDLE_KEEPALIVE, BODY)
def _(rig, _mp):
    now = rig.later(1)
    rig.receive(POST + b"ab")   # a whole head in one read: framed at once, no IDLE_HEAD
    assert (IDLE_KEEPALIVE, IDLE_HEAD) not in rig.conn.path
    assert rig.conn.deadline == now + BODY_TIMEOUT and rig.conn.recv_into


@transition(IDLE_KEEPALIVE, WAITING)
def _(rig, _mp):
    rig.receive(POST + b"abcd")
    assert (IDLE_KEEPALIVE, IDLE_HEAD) not in rig.conn.path
    assert rig.conn.deadline is None and bytes(rig.submitted[0].body) == b"abcd"


@transition(IDLE_KEEPALIVE, DRAINING)
def _(rig, _mp):
    rig.transport.backlog(100, paused=True)
    rig.receive(GET + GET)
    assert not rig.transport.reading and rig.conn.deadline is None
    assert rig.transport.held == OK   # the second request waits for the output to drain


@transition(IDLE_KEEPALIVE, CLOSING)
def _(rig, _mp):
    rig.waiting()
    rig.ctx.draining = True   # shutting down: the connection ends after this answer
    rig.answer()
    rig.took(IDLE_KEEPALIVE, CLOSING)
    assert rig.conn.deadline is None and rig.transport.drain_wanted and not rig.transport.shut


@transition(IDLE_KEEPALIVE, LINGERING)
def _(rig, _mp):
    rig.ctx.draining = True
    now = rig.later(1)
    rig.conn.write_drained()
    assert rig.transport.shut and rig.transport.reading and rig.conn.deadline == now + LINGER_SECONDS


@transition(IDLE_KEEPALIVE, CLOSED)
def _(rig, _mp):
    rig.conn.check_deadline(rig.later(KEEP_ALIVE))
    assert rig.transport.closed and rig.state == IDLE_KEEPALIVE   # told later, by the loop
    rig.end_turn()
    rig.closed()


# -- IDLE_HEAD -----------------------------------------------------------------------------

@transition(IDLE_HEAD, IDLE_KEEPALIVE)
def _(rig, _mp):
    rig.receive(GET_START)
    now = rig.later(1)
    rig.receive(GET_REST)   # the head is whole: answered at once
    assert rig.transport.held == OK and rig.conn.deadline == now + KEEP_ALIVE
    assert rig.conn.buf[rig.conn.pos:] == b""


@transition(IDLE_HEAD, IDLE_HEAD)
def _(rig, _mp):
    rig.receive(b"GET /ok HTTP/1.1\r\n")
    now = rig.later(3)
    rig.receive(b"Host: t\r\n\r\n" + PARTIAL)   # an answer, then the next head begins
    rig.took(IDLE_HEAD, IDLE_HEAD)
    assert rig.transport.held == OK and rig.conn.deadline == now + HEAD_TIMEOUT


@transition(IDLE_HEAD, IDLE_BACKLOG)
def _(rig, _mp):
    rig.transport.backlog()
    rig.receive(GET_START)
    rig.receive(GET_REST)
    assert rig.conn.deadline is None and rig.transport.reading


@transition(IDLE_HEAD, BODY)
def _(rig, _mp):
    rig.receive(POST[:20])
    now = rig.later(1)
    rig.receive(POST[20:] + b"ab")
    assert rig.conn.deadline == now + BODY_TIMEOUT and rig.conn.recv_into
    assert rig.conn.view is not None and rig.conn.body.got == 2


@transition(IDLE_HEAD, WAITING)
def _(rig, _mp):
    rig.receive(POST[:20])
    rig.receive(POST[20:] + b"abcd")
    assert rig.conn.deadline is None and bytes(rig.submitted[0].body) == b"abcd"


@transition(IDLE_HEAD, DRAINING)
def _(rig, _mp):
    rig.transport.backlog(100, paused=True)
    rig.receive(GET_START)
    rig.receive(GET_REST + GET)
    assert not rig.transport.reading and rig.conn.deadline is None
    assert rig.transport.held == OK   # the second request waits for the output to drain


@transition(IDLE_HEAD, CLOSING)
def _(rig, _mp):
    rig.receive(PARTIAL)
    rig.conn.check_deadline(rig.later(HEAD_TIMEOUT))
    assert rig.transport.held.startswith(b"HTTP/1.1 408 ")
    assert rig.transport.drain_wanted and rig.conn.deadline is None


@transition(IDLE_HEAD, CLOSED)
def _(rig, _mp):
    rig.receive(PARTIAL)
    rig.conn.eof_received()   # a head that can never be complete
    rig.end_turn()
    rig.closed()


# -- IDLE_BACKLOG --------------------------------------------------------------------------

def backlog(rig):
    rig.waiting()
    rig.transport.backlog()
    rig.answer()
    assert rig.state == IDLE_BACKLOG and rig.conn.deadline is None


@transition(IDLE_BACKLOG, IDLE_KEEPALIVE)
def _(rig, _mp):
    backlog(rig)
    now = rig.later(2)
    rig.transport.drain()
    assert rig.conn.deadline == now + KEEP_ALIVE


@transition(IDLE_BACKLOG, IDLE_HEAD)
def _(rig, _mp):
    backlog(rig)
    now = rig.later(2)
    rig.receive(PARTIAL)
    assert rig.conn.deadline == now + HEAD_TIMEOUT


@transition(IDLE_BACKLOG, IDLE_BACKLOG)
def _(rig, _mp):
    backlog(rig)
    rig.receive(GET)   # answered at once, behind the output still waiting
    assert rig.transport.held == OK + OK and rig.conn.deadline is None   # (the first: backlog's)
    assert rig.conn.path[-1] == (IDLE_BACKLOG, IDLE_BACKLOG)


@transition(IDLE_BACKLOG, BODY)
def _(rig, _mp):
    backlog(rig)
    now = rig.later(1)
    rig.receive(POST + b"ab")
    assert rig.conn.deadline == now + BODY_TIMEOUT and rig.conn.recv_into


@transition(IDLE_BACKLOG, WAITING)
def _(rig, _mp):
    backlog(rig)
    rig.receive(POST + b"abcd")
    assert rig.conn.deadline is None and len(rig.submitted) == 1


@transition(IDLE_BACKLOG, DRAINING)
def _(rig, _mp):
    backlog(rig)
    rig.transport.backlog(100, paused=True)   # the client stopped reading: over the high mark
    rig.receive(GET + GET)
    assert not rig.transport.reading and rig.conn.deadline is None
    assert rig.transport.held == OK + OK   # backlog's answer and the first GET's; the second waits


@transition(IDLE_BACKLOG, CLOSING)
def _(rig, _mp):
    rig.waiting()
    rig.transport.backlog()
    rig.ctx.draining = True
    rig.answer()
    rig.took(IDLE_BACKLOG, CLOSING)
    assert rig.transport.drain_wanted and not rig.transport.shut


@transition(IDLE_BACKLOG, LINGERING)
def _(rig, _mp):
    backlog(rig)
    rig.ctx.draining = True
    rig.transport.drain()
    assert rig.transport.shut and rig.conn.deadline == rig.loop.now + LINGER_SECONDS


@transition(IDLE_BACKLOG, CLOSED)
def _(rig, _mp):
    backlog(rig)
    rig.conn.eof_received()   # the client sent its end: close once its answers are out
    assert not rig.transport.closed and not rig.transport.reading
    rig.transport.drain()
    rig.end_turn()
    rig.closed()


# -- BODY ----------------------------------------------------------------------------------

CHUNKED_OK = b"POST /ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"


@transition(BODY, IDLE_KEEPALIVE)
def _(rig, _mp):
    rig.receive(b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
    assert rig.state == BODY
    now = rig.later(1)
    rig.receive(b"cd")
    assert rig.transport.held == OK and rig.conn.deadline == now + KEEP_ALIVE


@transition(BODY, IDLE_HEAD)
def _(rig, _mp):
    rig.receive(CHUNKED_OK + b"2\r\nab\r\n")
    assert rig.state == BODY
    now = rig.later(1)
    rig.receive(b"0\r\n\r\n" + PARTIAL)
    assert rig.transport.held == OK and rig.conn.deadline == now + HEAD_TIMEOUT


@transition(BODY, IDLE_BACKLOG)
def _(rig, _mp):
    rig.receive(CHUNKED_OK + b"2\r\nab\r\n")
    rig.transport.backlog()
    rig.receive(b"0\r\n\r\n")
    assert rig.transport.held == OK and rig.conn.deadline is None


@transition(BODY, BODY)
def _(rig, _mp):
    rig.receive(POST + b"a")
    now = rig.later(BODY_TIMEOUT - 1)
    rig.receive(b"b")   # progress: the body timeout starts again
    assert rig.conn.deadline == now + BODY_TIMEOUT
    rig.conn.check_deadline(rig.later(2))
    assert rig.state == BODY and not rig.transport.held


@transition(BODY, WAITING)
def _(rig, _mp):
    rig.receive(POST + b"ab")
    rig.receive(b"cd")
    assert rig.conn.deadline is None and not rig.conn.recv_into
    assert bytes(rig.submitted[0].body) == b"abcd"


@transition(BODY, DRAINING)
def _(rig, _mp):
    rig.receive(CHUNKED_OK + b"2\r\nab\r\n")
    rig.transport.backlog(100, paused=True)
    rig.receive(b"0\r\n\r\n")
    assert rig.transport.held == OK and not rig.transport.reading


@transition(BODY, CLOSING)
def _(rig, _mp):
    rig.receive(POST + b"ab")
    rig.conn.check_deadline(rig.later(BODY_TIMEOUT))
    assert rig.transport.held.startswith(b"HTTP/1.1 408 ") and rig.conn.view is None
    assert not rig.conn.recv_into and rig.metrics.in_flight == 0


@transition(BODY, CLOSED)
def _(rig, _mp):
    rig.receive(POST + b"ab")
    rig.conn.eof_received()   # a body that can never be complete
    rig.end_turn()
    rig.closed()
    assert rig.metrics.in_flight == 0


# -- WAITING -------------------------------------------------------------------------------

@transition(WAITING, IDLE_KEEPALIVE)
def _(rig, _mp):
    rig.waiting()
    now = rig.later(1)
    rig.answer()
    assert rig.transport.held == OK and rig.conn.deadline == now + KEEP_ALIVE
    assert rig.metrics.by_class[2] == 1 and rig.metrics.in_flight == 0


@transition(WAITING, IDLE_HEAD)
def _(rig, _mp):
    rig.waiting()
    rig.receive(PARTIAL)   # read ahead while the answer is pending
    assert rig.state == WAITING
    now = rig.later(1)
    rig.answer()
    assert rig.conn.deadline == now + HEAD_TIMEOUT


@transition(WAITING, IDLE_BACKLOG)
def _(rig, _mp):
    backlog(rig)
    rig.took(WAITING, IDLE_BACKLOG)


@transition(WAITING, STREAMING)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch)
    assert rig.transport.held == stream.head and rig.conn.deadline is None
    assert rig.conn.view is not None   # kept until the stream ends


@transition(WAITING, DRAINING)
def _(rig, _mp):
    rig.draining()
    assert not rig.transport.reading and rig.conn.deadline is None


@transition(WAITING, CLOSING)
def _(rig, _mp):
    rig.waiting()
    rig.answer((200, OK, True))
    assert rig.transport.held == OK and rig.transport.drain_wanted and not rig.transport.shut


@transition(WAITING, LINGERING)
def _(rig, _mp):
    rig.waiting()
    rig.answer((0, b"", True))   # dropped unanswered
    assert rig.transport.shut and not rig.transport.held and rig.metrics.in_flight == 0


@transition(WAITING, CLOSED)
def _(rig, _mp):
    rig.waiting()
    rig.transport.abort()   # the client reset the connection
    rig.answer()   # ... and the answer comes in the same turn: nothing sent, nothing counted
    assert rig.metrics.by_class[2] == 0 and rig.metrics.in_flight == 0
    rig.end_turn()
    rig.closed()


# -- STREAMING -----------------------------------------------------------------------------

@transition(STREAMING, IDLE_KEEPALIVE)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch)
    rig.conn._stream_post(stream, b"5\r\nhello\r\n")
    rig.end_turn()
    now = rig.later(1)
    rig.conn._stream_post(stream, streams.END)
    assert rig.conn.deadline == now + KEEP_ALIVE and rig.conn.view is None


@transition(STREAMING, IDLE_HEAD)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch)
    rig.receive(GET + PARTIAL)   # read ahead: a request and the start of the next
    now = rig.later(1)
    rig.conn._stream_post(stream, streams.END)
    assert rig.transport.held.endswith(OK)   # the request read ahead, answered
    assert rig.conn.deadline == now + HEAD_TIMEOUT


@transition(STREAMING, IDLE_BACKLOG)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch)
    rig.transport.backlog()
    rig.conn._stream_post(stream, streams.END)
    assert rig.conn.deadline is None


@transition(STREAMING, DRAINING)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch)
    rig.transport.backlog(100, paused=True)
    rig.conn._stream_post(stream, streams.END)
    assert not rig.transport.reading


@transition(STREAMING, CLOSING)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch, chunked=False)   # HTTP/1.0: the end of the body closes
    rig.conn._stream_post(stream, b"hello")
    rig.conn._stream_post(stream, streams.END)
    assert rig.transport.drain_wanted and not rig.transport.shut


@transition(STREAMING, LINGERING)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch, chunked=False)
    rig.conn._stream_post(stream, b"hello")
    rig.end_turn()   # every piece is out before the end comes
    rig.conn._stream_post(stream, streams.END)
    assert rig.transport.shut and rig.transport.sent.endswith(b"hello")


@transition(STREAMING, CLOSED)
def _(rig, monkeypatch):
    stream = rig.streaming(monkeypatch)
    rig.conn._stream_post(stream, streams.ABORT)   # the producer failed
    assert rig.transport.closed and rig.metrics.in_flight == 0
    rig.end_turn()
    rig.closed()


# -- DRAINING ------------------------------------------------------------------------------

@transition(DRAINING, IDLE_KEEPALIVE)
def _(rig, _mp):
    rig.draining()
    now = rig.later(1)
    rig.transport.drain()
    assert rig.transport.reading and rig.conn.deadline == now + KEEP_ALIVE


@transition(DRAINING, IDLE_HEAD)
def _(rig, _mp):
    rig.waiting()
    rig.receive(GET)   # pipelined: read ahead
    rig.transport.backlog(100, paused=True)
    rig.answer()
    assert rig.state == DRAINING and not rig.submitted
    rig.transport.drain()
    rig.took(DRAINING, IDLE_HEAD, stays=False)
    assert rig.transport.reading and rig.transport.held == OK   # the next request, answered
    return MOVES_ON


@transition(DRAINING, IDLE_BACKLOG)
def _(rig, _mp):
    rig.draining()
    rig.transport.write_paused = False
    rig.conn.resume_writing()   # below the low water mark, output still queued
    assert rig.transport.reading and rig.conn.deadline is None


@transition(DRAINING, CLOSED)
def _(rig, _mp):
    rig.draining()
    rig.conn.check_deadline(rig.later(BODY_TIMEOUT + 1))   # the client stopped reading
    rig.end_turn()
    rig.closed()


# -- CLOSING, LINGERING --------------------------------------------------------------------

@transition(CLOSING, LINGERING)
def _(rig, _mp):
    rig.closing()
    rig.receive(b"more")   # dropped
    now = rig.later(1)
    rig.end_turn()   # the answer is out
    assert rig.transport.shut and rig.transport.reading and rig.transport.sent == OK
    assert rig.conn.deadline == now + LINGER_SECONDS and rig.conn.buf == b""


@transition(CLOSING, CLOSED)
def _(rig, _mp):
    rig.closing()
    rig.conn.check_deadline(rig.later(BODY_TIMEOUT + 1))   # the answer never went out
    rig.end_turn()
    rig.closed()
    assert not rig.transport.shut


@transition(LINGERING, CLOSED)
def _(rig, _mp):
    rig.closing()
    rig.end_turn()
    assert rig.state == LINGERING
    rig.conn.check_deadline(rig.later(LINGER_SECONDS - 0.5))
    assert not rig.transport.closed
    rig.conn.check_deadline(rig.later(1))
    rig.end_turn()
    rig.closed()


# -- the tests -----------------------------------------------------------------------------

def _name(pair):
    return f"{STATE_NAMES[pair[0]]}->{STATE_NAMES[pair[1]]}"


@pytest.mark.parametrize("pair", sorted(TRANSITIONS), ids=_name)
def test_transition(pair, monkeypatch):
    rig = Rig()
    moved_on = TRANSITIONS[pair](rig, monkeypatch) is MOVES_ON
    rig.took(*pair, stays=not moved_on)


def test_every_allowed_transition_has_a_test():
    allowed = {(before, after) for before, nexts in NEXT.items() for after in nexts}
    assert set(TRANSITIONS) == allowed, sorted(map(_name, allowed ^ set(TRANSITIONS)))


def test_an_illegal_transition_is_refused():
    rig = Rig()
    with pytest.raises(IllegalTransition, match="IDLE_KEEPALIVE>: no transition to STREAMING"):
        rig.conn._enter(STREAMING)   # a stream is only ever the answer to a request in WAITING
    assert rig.state == IDLE_KEEPALIVE and rig.conn.deadline == rig.loop.now + KEEP_ALIVE
    rig.transport.abort()
    rig.end_turn()
    with pytest.raises(IllegalTransition, match="CLOSED>: no transition to IDLE_KEEPALIVE"):
        rig.conn._enter(IDLE_KEEPALIVE)   # nothing follows CLOSED
    assert rig.state == CLOSED


def test_the_deadline_is_chosen_by_the_state_alone():
    rig = Rig()
    timeouts = rig.ctx.timeouts
    assert len(timeouts) == len(STATE_NAMES)
    assert {STATE_NAMES[s]: t for s, t in enumerate(timeouts) if t is not None} == {
        "IDLE_KEEPALIVE": KEEP_ALIVE, "IDLE_HEAD": HEAD_TIMEOUT, "BODY": BODY_TIMEOUT,
        "LINGERING": LINGER_SECONDS}


def test_a_transport_closed_during_a_call_tells_its_protocol_only_from_the_loop():
    loop = EventLoop()
    a, b = socket.socketpair()
    try:
        told = []
        protocol = types.SimpleNamespace(connection_lost=lambda: told.append("lost"))
        transport = Transport(loop, a, None, MemoryBudget(1 << 20),
                              types.SimpleNamespace(bytes_out=0), 1 << 16, 1 << 14)
        transport.protocol = protocol
        transport.abort()
        assert transport.closed and told == []   # not from inside abort()
        transport.abort()
        loop.run_closed()
        assert told == ["lost"]   # once
    finally:
        b.close()
        loop.sel.close()
        loop._wake_r.close()
        loop._wake_w.close()


class _Closer:
    """A selector target that closes itself when readable, as a transport does on a reset."""

    closed = False

    def __init__(self, name, loop, sock, seen):
        self.name, self.loop, self.sock, self.seen = name, loop, sock, seen

    def on_readable(self):
        self.seen.append((self.name, list(self.loop.lost_log)))
        self.closed = True
        self.loop.closed_this_turn.append(lambda: self.loop.lost_log.append(self.name))


def test_a_close_is_delivered_before_the_loop_hands_out_the_next_event():
    """What the next event of the same turn sees is current (a /metrics answer counts open
    connections, accepting counts them against --max-connections), as when connection_lost
    was called inside abort()."""
    loop = EventLoop()
    loop.lost_log = []
    seen = []
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        for name, (ours, theirs) in zip("ab", pairs):
            ours.setblocking(False)
            loop.sel.register(ours, selectors.EVENT_READ, _Closer(name, loop, ours, seen))
            theirs.send(b"x")
        loop.after_turn = lambda token: setattr(loop, "stopped", True) or True
        loop.run()
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
    (first, saw_first), (second, saw_second) = seen
    assert saw_first == [] and saw_second == [first]
    assert sorted(loop.lost_log) == ["a", "b"]
