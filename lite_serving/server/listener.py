"""The server: the loop, the dispatch and one protocol object per connection, put together.

:class:`Server` accepts connections (refusing those over ``--max-connections``),
gives each a :class:`~lite_serving.server.transport.Transport` and an
:class:`~lite_serving.server.connection.HTTPConnection`, checks their deadlines once a
second, and shuts down gracefully: on :meth:`Server.request_stop` the
listening sockets close, idle connections close, and the rest are answered
for up to ``--graceful-timeout`` seconds.

Its deadlines, all watched by the loop (``_wait_at_most`` bounds ``select`` by
the nearest): held access lines; the connections' (``check_deadline``, each
tick); ``--predict-timeout`` (``_expire_predicts``: 504 for calls past it, see
``predict_deadline``); the end of a pause in accepting (``ACCEPT_PAUSE`` after
the process ran out of descriptors or memory: the listening socket stays
readable, so accepting again at once would only spin); the drain's.
Accepting also stops while every predict thread is stuck, in a worker of
``--workers`` (the other workers take the connections), and the worker's
heartbeat (``heartbeat``) tells its supervisor, each tick, that the loop turns.
"""

import errno
import signal
import socket
import time

from lite_serving.codecs import json_codec
from lite_serving.http.replies import error_reply
from lite_serving.process.logs import get_logger
from lite_serving.server.access_log import AccessLog
from lite_serving.server.connection import ConnectionContext, HTTPConnection
from lite_serving.server.dispatch import deliver, make_dispatch
from lite_serving.server.loop import EventLoop
from lite_serving.server.predict_deadline import HEALTHY, STUCK
from lite_serving.server.request_body import BodyBuffers, MemoryBudget, size_class
from lite_serving.server.transport import Transport

log = get_logger("lite_serving")

ACCEPT_PAUSE = 0.5     # seconds accepting stops after accept() found no descriptor or memory
PAUSES_PER_LINE = 120   # while it lasts, one log line per this many pauses (a minute)
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Server:
    """Serves an :class:`~lite_serving.app.routes.Application` on listening sockets."""

    def __init__(self, app, config, listeners):
        self.app = app
        self.config = config
        self.listeners = listeners
        self.metrics = app.metrics
        self.loop = loop = EventLoop()
        self.dispatch = make_dispatch(config, app, loop)
        self.budget = MemoryBudget(config.max_memory)
        self.access_log = AccessLog()
        # the largest spare buffer kept: the one a body of --max-body-size takes (BodyBuffers)
        buffers = BodyBuffers(keep_largest=size_class(config.max_body_size))
        self.ctx = ConnectionContext(app, config, self.dispatch, self.budget, buffers,
                                     self.metrics, self.access_log, loop)
        self.stopping = False
        self.tls = None   # a tls.TLSAcceptor when the port speaks HTTPS
        self.heartbeat = None   # a heartbeat.Beat under --workers: tells the supervisor the loop turns
        self.deadlines = self.dispatch.all_deadlines()   # --predict-timeout, one per kind of thread
        self.health = HEALTHY        # of the predict threads (predict_deadline.health)
        app.health = self.predict_health if self.deadlines else None
        self._accept_resume_at = None   # end of a pause after running out of descriptors
        self._accept_pauses = 0         # pauses since accepting last worked
        self._accept_stopped = set()    # why accepting is stopped: "resources", "stuck"
        self._stop_requested_at = None
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
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
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
            self.deadlines = dispatch.all_deadlines()
            self.app.health = self.predict_health if self.deadlines else None

    def stop_overdue(self, now):
        """For the main thread: the stop was asked for over ``--graceful-timeout`` (+1 s) ago and
        the loop has not finished (a predict holds the I/O thread)."""
        asked = self._stop_requested_at
        return asked is not None and now - asked > self.config.graceful_timeout + 1.0

    def _wait_at_most(self):
        """How long the loop may sleep in ``select``: not at all while requests wait to run,
        not past the next write of held access lines, at most a second (the tick)."""
        if self.dispatch.pending():
            return 0
        now = self.loop.now
        wait = self.access_log.due_in(now, 1.0)
        for deadlines in self.deadlines:
            due = deadlines.due_in(now)
            if due is not None and due < wait:
                wait = due
        if self._accept_resume_at is not None:
            wait = max(0.0, min(wait, self._accept_resume_at - now))
        return wait

    def _after_turn(self, token):
        if not self.dispatch.after_turn(token):
            return False
        self.access_log.flush_some(self.loop.now)
        self.metrics.fold_some()
        if self.deadlines:
            self._expire_predicts()
        if self._accept_resume_at is not None and self.loop.now >= self._accept_resume_at:
            self._accept_resume_at = None
            self._resume_accepting("resources")
        if self.stopping:
            self._drain_step()
        return True

    # -- --predict-timeout -----------------------------------------------------------

    def _expire_predicts(self):
        now = self.loop.now
        for deadlines in self.deadlines:
            due = deadlines.due_in(now)
            if due is None or due > 0:
                continue
            expired = deadlines.expire(now)
            message = (f"predict did not answer within --predict-timeout "
                       f"({deadlines.timeout:g} s)")
            for conn, view in expired:
                deliver(conn, view, error_reply(504, message, view.head))
            log.error("%d predict call(s) ran past --predict-timeout (%g s): answered 504; their "
                      "threads are stuck until the calls return", len(expired), deadlines.timeout)
            if deadlines.saturated:
                self.dispatch.refuse_waiting()
        self._check_health(now)

    def predict_health(self):
        """HEALTHY, SATURATED or STUCK: the worst of the predict threads' (probes, I/O thread)."""
        self._check_health(self.loop.now)
        return self.health

    def _check_health(self, now):
        self.metrics.predicts_stuck = sum(d.stuck for d in self.deadlines)
        health = max(d.health(now) for d in self.deadlines)
        if health == self.health:
            return
        before, self.health = self.health, health
        if health == HEALTHY:
            log.info("a stuck predict call returned and freed its thread: predicts run again, "
                     "/readyz and /healthz answer 200")
        elif before == HEALTHY:
            log.error("every predict thread is held by a call past --predict-timeout: predicts "
                      "are answered 503 and /readyz fails; /healthz fails too if this lasts "
                      "another %g s", self.config.predict_timeout)
        if health == STUCK:
            log.error("predict threads stuck for over --predict-timeout: /healthz answers 503")
        if self.heartbeat is not None:
            self.heartbeat.set_health(health)
            if health == HEALTHY:
                self._resume_accepting("stuck")
            else:   # the other workers take the new connections
                self._pause_accepting("stuck")

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
        if self.heartbeat is not None:
            self.heartbeat.beat(now)
        if self.deadlines:
            self._check_health(now)
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
        self.metrics.publish()   # under --workers: the last figures, which the supervisor keeps

    # -- accepting -------------------------------------------------------

    def _accept(self, lsock):
        ctx, config, loop = self.ctx, self.config, self.loop
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                if self._accept_pauses:   # every queued connection taken: it works again
                    log.info("accepting connections again, after %d pause(s) of %g s for want of "
                             "descriptors or memory", self._accept_pauses, ACCEPT_PAUSE)
                    self._accept_pauses = 0
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._out_of_resources(exc)
                else:
                    log.error("accepting a connection failed: %s", exc)
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

    def _out_of_resources(self, exc):
        """accept() failed for want of descriptors or memory: the connection stays queued and
        the socket readable, so stop accepting for ACCEPT_PAUSE (one log line a minute at most)."""
        self._accept_pauses += 1
        if self._accept_pauses % PAUSES_PER_LINE == 1:
            log.error("cannot accept connections: %s (%d connections open; pause %d); not "
                      "accepting for %g s at a time until it works again", exc.strerror or exc,
                      len(self.connections), self._accept_pauses, ACCEPT_PAUSE)
        self._accept_resume_at = self.loop.now + ACCEPT_PAUSE
        self._pause_accepting("resources")

    def _pause_accepting(self, why):
        if not self._accept_stopped:
            for lsock in self.listeners:
                self.loop.pause_listener(lsock)
        self._accept_stopped.add(why)

    def _resume_accepting(self, why):
        stopped = self._accept_stopped
        if why not in stopped:
            return
        stopped.discard(why)
        if not stopped and not self.ctx.draining:
            for lsock in self.listeners:
                self.loop.resume_listener(lsock)


def _refuse(sock):
    _status, data, _close = error_reply(503, "too many open connections; try again shortly")
    try:
        sock.setblocking(False)
        sock.send(data)
    except OSError:
        pass
    sock.close()
