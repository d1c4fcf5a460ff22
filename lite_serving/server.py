"""The server: the loop, the dispatch and one protocol object per connection, put together.

:class:`Server` accepts connections (refusing those over ``--max-connections``),
gives each a :class:`~lite_serving.transport.Transport` and an
:class:`~lite_serving.connection.HTTPConnection`, checks their deadlines once a
second, and shuts down gracefully: on :meth:`Server.request_stop` the
listening sockets close, idle connections close, and the rest are answered
for up to ``--graceful-timeout`` seconds.
"""

import errno
import signal
import socket
import time

from . import json_codec
from .access_log import AccessLog
from .app import error_reply
from .connection import ConnectionContext, HTTPConnection
from .dispatch import make_dispatch
from .loop import EventLoop
from .logs import get_logger
from .request_body import BodyBuffers, MemoryBudget
from .transport import Transport

log = get_logger("lite_serving")


class Server:
    """Serves an :class:`~lite_serving.app.Application` on listening sockets."""

    def __init__(self, app, config, listeners):
        self.app = app
        self.config = config
        self.listeners = listeners
        self.metrics = app.metrics
        self.loop = loop = EventLoop()
        self.dispatch = make_dispatch(config, app, loop)
        self.budget = MemoryBudget(config.max_memory)
        self.access_log = AccessLog()
        self.ctx = ConnectionContext(app, config, self.dispatch, self.budget, BodyBuffers(),
                                     self.metrics, self.access_log, loop)
        self.stopping = False
        self.tls = None   # a tls.TLSAcceptor when the port speaks HTTPS
        self._drain_deadline = None
        loop.on_accept = self._accept
        loop.after_turn = self._after_turn
        loop.wait_at_most = self._wait_at_most
        loop.on_tick = self._tick
        loop.on_idle = self._idle
        loop.on_close = self._close_all
        self.finished = loop.finished

    @property
    def connections(self):
        return self.ctx.connections

    # -- lifecycle -------------------------------------------------------

    def wake(self):
        """Break the loop out of ``select`` (any thread, signal handlers included)."""
        self.loop.wake()

    def request_stop(self, *_):
        """Begin the graceful shutdown (any thread, signal handlers included)."""
        self.stopping = True
        self.app.draining = True
        self.loop.wake()

    def install_signal_handlers(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)

    def serve_forever(self):
        """Run the loop until stopped and drained; ``finished`` is set once everything is closed."""
        self.access_log.start()
        for lsock in self.listeners:
            self.loop.add_listener(lsock)
        self.loop.run()

    def close(self):
        """Stop the dispatch's threads (after the loop has finished); the last figures go to
        the server's /metrics."""
        self.dispatch.stop()
        self.metrics.publish()

    def predictor_ready(self):
        """The predictor was built while the loop already ran (``--listen-early``): batch now
        if the application answers some requests in batches."""
        dispatch = make_dispatch(self.config, self.app, self.loop)
        if type(dispatch) is not type(self.dispatch):
            dispatch.inner = self.dispatch  # what the old dispatch holds still comes back
            self.dispatch = self.ctx.dispatch = dispatch

    def _wait_at_most(self):
        """How long the loop may sleep in ``select``: not at all while requests wait to run,
        not past the next write of held access lines, at most a second (the tick)."""
        if self.dispatch.pending():
            return 0
        return self.access_log.due_in(self.loop.now, 1.0)

    def _after_turn(self, token):
        if not self.dispatch.after_turn(token):
            return False
        self.access_log.flush_some(self.loop.now)
        self.metrics.fold_some()
        if self.stopping:
            self._drain_step()
        return True

    def _drain_step(self):
        now = self.loop.now
        if self._drain_deadline is None:
            self._drain_deadline = now + self.config.graceful_timeout
            log.info("shutting down: no new connections; waiting up to %gs for requests in flight",
                     self.config.graceful_timeout)
            self.ctx.draining = True
            for lsock in self.listeners:
                self.loop.remove_listener(lsock)
            for conn in list(self.connections.values()):
                conn.drain()
        if not self.connections or now >= self._drain_deadline:
            self.loop.stopped = True

    def _idle(self):
        """The first time the loop has nothing to do: load what start-up left for later."""
        if self.dispatch.pending():
            return
        self.loop.on_idle = None
        started = time.perf_counter()
        try:
            json_codec.load()
        except Exception:  # the first JSON document that needs it will try again, and say why
            log.exception("orjson could not be loaded while idle")
            return
        log.debug("orjson loaded in %.1f ms, while idle", (time.perf_counter() - started) * 1000)

    def _tick(self, now):
        self.metrics.publish()
        self.access_log.flush()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.check_deadline(now)
        if self.stopping:
            for conn in list(self.connections.values()):
                if conn.transport is not None:
                    conn.drain()

    def _close_all(self):
        for conn in list(self.connections.values()):
            conn.abort()
        self.access_log.flush()

    # -- accepting -------------------------------------------------------

    def _accept(self, lsock):
        ctx, config, loop = self.ctx, self.config, self.loop
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept connections: %s", exc)
                return
            if len(ctx.connections) >= config.max_connections:
                if self.tls is None:
                    _refuse(sock)
                else:   # a TLS client cannot read a plain-text answer: closed before the handshake
                    sock.close()
                continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                self.tls.accept(sock, peer)
                continue
            transport = Transport(loop, sock, peer, self.budget, self.metrics,
                                  config.max_pending_output, config.max_pending_output // 4)
            conn = HTTPConnection(ctx, transport)
            ctx.connections[id(conn)] = conn
            self.metrics.connections = len(ctx.connections)
            transport.start()


def _refuse(sock):
    _status, data, _close = error_reply(503, "too many open connections; try again shortly")
    try:
        sock.setblocking(False)
        sock.send(data)
    except OSError:
        pass
    sock.close()
