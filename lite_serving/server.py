"""The selector loop: sockets in, parsed requests to the application, replies out.

One thread owns every socket. Each turn of the loop reads what is ready,
frames complete requests with the parser, answers cheap routes at once and
hands predict requests to the :class:`~lite_serving.executor.PredictPool`
as one batch; answered batches come back through a wake-up socket and are
written in request order.
"""

import collections
import errno
import logging
import selectors
import signal
import socket
import threading
import time

from . import stream as streams
from .app import error_reply
from .executor import answer_batch
from .parser import ChunkedDecoder, ParseError, parse_head
from .request_view import RequestView

log = logging.getLogger("lite_serving")
access_log = logging.getLogger("lite_serving.access")

RECV_SIZE = 262144
MAX_BUFFERED = 4 * 1024 * 1024   # unparsed bytes held for a connection whose answer is pending
OUT_HIGH = 4 * 1024 * 1024       # unsent answer bytes above which a connection's input is not read
OUT_LOW = 1024 * 1024            # ... and below which it is read again
LINGER_SECONDS = 2.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

RESCUE_AFTER = 0.02      # seconds a predict may hold the I/O thread before another thread takes over
SLOW_RESCUES = 5         # rescues within SLOW_WINDOW seconds that move predict to the thread pool
SLOW_WINDOW = 60.0

_HEAD, _BODY, _CHUNKED, _LINGER = range(4)
_ACCEPT, _WAKE = object(), object()
_EMPTY = b""


class Connection:
    """State of one client connection (touched by the I/O thread only)."""

    __slots__ = ("sock", "fd", "peer", "buf", "state", "head", "body", "got", "decoder",
                 "busy", "eof", "close_after", "out", "unsent", "writing", "paused", "deadline",
                 "closed",
                 "stream",
                 "behind_stream")

    def __init__(self, sock, peer, now):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.buf = _EMPTY          # unparsed bytes
        self.state = _HEAD
        self.head = None           # head whose body is being read
        self.body = None           # bytearray being filled (Content-Length body)
        self.got = 0
        self.decoder = None
        self.busy = False          # a batch of this connection is being answered
        self.eof = False           # the client closed its sending side
        self.close_after = False   # close once ``out`` is written
        self.out = collections.deque()  # data not yet accepted by the socket
        self.unsent = 0            # bytes in ``out``
        self.writing = False       # registered for EVENT_WRITE
        self.paused = False        # not reading: input or output is backed up (see _update_events)
        self.deadline = now
        self.closed = False
        self.stream = None         # StreamBody being sent
        self.behind_stream = None  # answered items waiting for the stream to end


class Server:
    """Serves an :class:`~lite_serving.app.Application` on listening sockets."""

    def __init__(self, app, config, listeners):
        self.app = app
        self.config = config
        self.listeners = listeners
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.pool = None
        self.running = False
        self.stopping = False
        self.now = time.monotonic()
        self.posted = collections.deque()   # (connection, data) from stream threads
        self.buffers = BodyBuffers()
        # "auto" dispatch: predict runs on the I/O thread; a watchdog hands the
        # sockets to a new thread when one runs longer than RESCUE_AFTER.
        self.adaptive = config.dispatch == "auto" and config.threads > 0
        self.inline = config.dispatch == "inline" or config.threads == 0
        self._owner_lock = threading.Lock()
        self._owner = None          # token of the thread running the loop
        self._inline_since = None   # when the owner began answering a batch inline
        self._rescued = collections.deque()   # batches finished by a thread that lost the loop
        self._rescue_times = collections.deque()
        self._drain_deadline = None
        self._next_sweep = 0.0
        self.finished = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._access = False
        self.metrics = app.metrics
        self._limits = (config.max_head_size, config.max_headers, config.max_target)

    # -- lifecycle -------------------------------------------------------

    def wake(self):
        """Break the loop out of ``select`` (any thread, signal handlers included)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def request_stop(self, *_):
        self.stopping = True
        self.app.draining = True
        self.wake()

    def install_signal_handlers(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)

    def serve_forever(self, pool):
        """Run the loop until :meth:`request_stop`, then drain and close (graceful shutdown).

        Returns when this thread stops running the loop; ``finished`` is set
        once the server has closed, whichever thread ran the loop last.
        """
        self.pool = pool
        self._access = access_log.isEnabledFor(logging.INFO)
        for lsock in self.listeners:
            lsock.setblocking(False)
            self.sel.register(lsock, selectors.EVENT_READ, _ACCEPT)
        self.sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self.running = True
        self._next_sweep = time.monotonic() + 1.0
        self._owner = token = object()
        if self.adaptive:
            threading.Thread(target=self._watchdog, name="lite_serving-watchdog", daemon=True).start()
        self._run_loop(token)

    def _run_loop(self, token):
        sel = self.sel
        try:
            while True:
                events = sel.select(1.0)
                self.now = now = time.monotonic()
                batch = []
                for key, mask in events:
                    data = key.data
                    try:
                        if data is _ACCEPT:
                            self._accept(key.fileobj)
                        elif data is _WAKE:
                            self._on_wake(batch)
                        else:
                            if mask & selectors.EVENT_READ:
                                self._on_readable(data, batch)
                            if mask & selectors.EVENT_WRITE and not data.closed:
                                self._flush(data)
                    except Exception:
                        self._internal_error(data)
                try:
                    if batch and not self._dispatch(batch, token):
                        return  # another thread runs the loop now
                except Exception:
                    for conn, _items in batch:
                        self._internal_error(conn)
                if now >= self._next_sweep:
                    self._next_sweep = now + 1.0
                    self._sweep(now)
                if self.stopping:
                    if self._drain_deadline is None:
                        self._drain_deadline = now + self.config.graceful_timeout
                        self._begin_drain()
                    if self._drained() or now >= self._drain_deadline:
                        break
        except BaseException:
            log.exception("the I/O loop failed")
            raise
        finally:
            if self._owner is token:
                self.running = False
                self._close_all()
                self.finished.set()

    def _internal_error(self, conn):
        """A bug in lite_serving while handling one connection: log it, drop only that connection."""
        log.exception("internal error while serving a connection; closing it")
        if isinstance(conn, Connection):
            conn.busy = False
            self._close(conn)

    def _watchdog(self):
        """Hand the loop to a new thread when a predict holds the I/O thread too long."""
        while not self.finished.wait(RESCUE_AFTER / 2):
            with self._owner_lock:
                since = self._inline_since
                if since is None or time.monotonic() - since < RESCUE_AFTER:
                    continue
                self._owner = token = object()
                self._inline_since = None
            self._note_rescue()
            threading.Thread(target=self._run_loop, args=(token,), name="lite_serving-io",
                             daemon=True).start()

    def _note_rescue(self):
        now = time.monotonic()
        times = self._rescue_times
        times.append(now)
        while times and now - times[0] > SLOW_WINDOW:
            times.popleft()
        if len(times) >= SLOW_RESCUES and self.adaptive:
            self.adaptive = False
            log.info("predict took over %.0f ms %d times in %.0f s: it runs on %d predict threads "
                     "from now on", RESCUE_AFTER * 1000, len(times), SLOW_WINDOW, self.pool.threads)

    def _begin_drain(self):
        log.info("shutting down: no new connections; waiting up to %gs for requests in flight",
                 self.config.graceful_timeout)
        for lsock in self.listeners:
            try:
                self.sel.unregister(lsock)
            except (KeyError, ValueError):
                pass
            lsock.close()
        for conn in list(self.conns.values()):
            self._close_if_idle(conn)

    def _close_if_idle(self, conn):
        if not conn.busy and not conn.out and conn.state == _HEAD and not conn.buf:
            self._close(conn)

    def _drained(self):
        return not self.conns and (self.pool is None or self.pool.in_flight == 0)

    def _close_all(self):
        for conn in list(self.conns.values()):
            self._close(conn)
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- accepting -------------------------------------------------------

    def _accept(self, lsock):
        for _ in range(64):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept connections: %s", exc)
                return
            if len(self.conns) >= self.config.max_connections:
                self._refuse(sock)
                continue
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, peer, self.now)
            conn.deadline = self.now + self.config.keep_alive_timeout
            self.conns[conn.fd] = conn
            self.metrics.connections = len(self.conns)
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _refuse(self, sock):
        _status, data, _close = error_reply(503, "too many open connections; try again shortly")
        try:
            sock.setblocking(False)
            sock.send(data)
        except OSError:
            pass
        sock.close()

    # -- reading ---------------------------------------------------------

    def _recv(self, conn, size):
        """Up to ``size`` bytes, or None when there is nothing (EOF and errors handled here)."""
        try:
            data = conn.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            self._close(conn)
            return None
        if not data:
            self._on_eof(conn)
            return None
        self.metrics.bytes_in += len(data)
        return data

    def _on_readable(self, conn, batch):
        if conn.state == _BODY and not conn.busy:
            self._read_body(conn, batch)
            return
        data = self._recv(conn, RECV_SIZE)
        if data is None or conn.state == _LINGER:
            return
        partial = bool(conn.buf)
        if partial:
            data = conn.buf + data
        if conn.busy:
            conn.buf = data
            if len(data) > MAX_BUFFERED:
                conn.paused = True
                self._update_events(conn)
            return
        self._parse(conn, data, batch, partial)

    def _read_body(self, conn, batch):
        if type(conn.body) is not bytearray:
            self._read_spooled(conn, batch)
            return
        length = conn.head.content_length
        view = memoryview(conn.body)[conn.got:length]
        try:
            n = conn.sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        finally:
            view.release()
        if n == 0:
            self._on_eof(conn)
            return
        conn.got += n
        self.metrics.bytes_in += n
        conn.deadline = self.now + self.config.body_timeout
        if conn.got == length:
            items = []
            self._complete_buffered(conn, items)
            self._emit(conn, items, batch)

    def _complete_buffered(self, conn, items):
        """A body read into a reusable buffer: the request sees a memoryview of it."""
        head, buf = conn.head, conn.body
        conn.state, conn.head, conn.body = _HEAD, None, None
        return self._complete(conn, head, memoryview(buf)[:head.content_length], items, pooled=buf)

    def _read_spooled(self, conn, batch):
        """Body bytes of a large multipart upload go to its temporary file as they arrive."""
        data = self._recv(conn, min(RECV_SIZE, conn.head.content_length - conn.got))
        if data is None or not self._spool_write(conn, data):
            return
        conn.deadline = self.now + self.config.body_timeout
        if conn.got == conn.head.content_length:
            items = []
            self._complete_spooled(conn, items)
            self._emit(conn, items, batch)

    def _spool_write(self, conn, data):
        """Append to the upload's temporary file; on failure answer 507 and end the connection."""
        try:
            conn.body.write(data)
        except OSError as exc:
            log.error("cannot write an upload to a temporary file: %s", exc)
            head = conn.head
            conn.body.close()
            conn.state, conn.head, conn.body = _HEAD, None, None
            self._write_replies(conn, [[None, error_reply(507, "the server cannot store this upload now", head)]])
            return False
        conn.got += len(data)
        return True

    def _complete_spooled(self, conn, items):
        head, spool = conn.head, conn.body
        conn.state, conn.head, conn.body = _HEAD, None, None
        spool.flush()
        return self._complete(conn, head, _EMPTY, items, spool=spool)

    def _on_eof(self, conn):
        conn.eof = True
        if conn.busy or conn.out:
            self._update_events(conn)
        else:
            self._close(conn)

    def _parse(self, conn, data, batch, partial=False):
        """Frame every complete request in ``data``; keep the rest for later.

        ``partial``: ``data`` continues a head that was already arriving, whose
        deadline (set when it began) must not move.
        """
        items = []
        pos = 0
        size = len(data)
        max_head, max_headers, max_target = self._limits
        while pos < size:
            if conn.state == _HEAD:
                try:
                    head = parse_head(data, pos, max_head, max_headers, max_target)
                except ParseError as exc:
                    items.append([None, error_reply(exc.status, exc.message)])
                    pos = size
                    break
                if head is None:
                    break
                pos = head.end
                length = head.content_length
                if head.chunked:
                    conn.decoder = ChunkedDecoder(self.config.max_body_size)
                    conn.head = head
                    conn.state = _CHUNKED
                    if head.expect_continue and pos == size:
                        items.append([None, (100, CONTINUE, False)])
                    continue
                if length > 0:
                    if length > self.config.max_body_size:
                        items.append([None, error_reply(
                            413, f"request body of {length} bytes is over the limit of "
                                 f"{self.config.max_body_size}", head)])
                        pos = size
                        break
                    if size - pos >= length:
                        body = data[pos:pos + length]
                        pos += length
                    elif length > self.config.spool_size and _is_multipart(head.content_type):
                        conn.head = head
                        import tempfile  # rare path; keeps start-up light
                        conn.body = tempfile.TemporaryFile(prefix="lite_serving-upload-")
                        conn.got = 0
                        take = size - pos
                        conn.state = _BODY
                        if not self._spool_write(conn, data[pos:pos + take]):
                            pos = size
                            break
                        conn.deadline = self.now + self.config.body_timeout
                        pos = size
                        if head.expect_continue and take == 0:
                            items.append([None, (100, CONTINUE, False)])
                        break
                    else:
                        conn.head = head
                        conn.body = self.buffers.take(length)
                        got = size - pos
                        conn.body[:got] = data[pos:]
                        conn.got = got
                        conn.state = _BODY
                        conn.deadline = self.now + self.config.body_timeout
                        pos = size
                        if head.expect_continue and got == 0:
                            items.append([None, (100, CONTINUE, False)])
                        break
                else:
                    body = _EMPTY
                if not self._complete(conn, head, bytes(body), items):
                    pos = size
                    break
            elif conn.state == _BODY and type(conn.body) is not bytearray:
                take = min(conn.head.content_length - conn.got, size - pos)
                if not self._spool_write(conn, data[pos:pos + take]):
                    pos = size
                    break
                pos += take
                if conn.got < conn.head.content_length:
                    break
                if not self._complete_spooled(conn, items):
                    pos = size
                    break
            elif conn.state == _BODY:  # the rest of a body, after waiting on a pending answer
                take = min(conn.head.content_length - conn.got, size - pos)
                conn.body[conn.got:conn.got + take] = data[pos:pos + take]
                conn.got += take
                pos += take
                if conn.got < conn.head.content_length:
                    break
                if not self._complete_buffered(conn, items):
                    pos = size
                    break
            else:  # _CHUNKED
                try:
                    pos = conn.decoder.feed(data, pos)
                except ParseError as exc:
                    items.append([None, error_reply(exc.status, exc.message, conn.head)])
                    pos = size
                    break
                conn.deadline = self.now + self.config.body_timeout
                if not conn.decoder.done:
                    break
                head, decoder = conn.head, conn.decoder
                conn.state, conn.head, conn.decoder = _HEAD, None, None
                if not self._complete(conn, head, decoder.body(), items, decoder.trailers):
                    pos = size
                    break
        conn.buf = data[pos:] if pos < size else _EMPTY
        if conn.state == _HEAD:
            if not conn.buf:
                conn.deadline = self.now + self.config.keep_alive_timeout
            elif not partial or pos > 0:
                conn.deadline = self.now + self.config.head_timeout
        self._emit(conn, items, batch)

    def _complete(self, conn, head, body, items, trailers=None, spool=None, pooled=None):
        """Route one complete request; False when nothing after it may be parsed."""
        view = RequestView(head, body, conn.peer, trailers, spool)
        view.pooled = pooled
        view.started = self.now
        self.metrics.in_flight += 1
        if self.stopping:
            head.keep_alive = False  # draining: this connection ends after its answer
        reply = self.app.route(view)
        items.append([view, reply])
        return head.keep_alive and (reply is None or not reply[2])

    def _emit(self, conn, items, batch):
        if not items:
            return
        for item in items:
            if item[1] is None:
                conn.busy = True
                batch.append((conn, items))
                return
        self._write_replies(conn, items)

    def _dispatch(self, batch, token):
        """Answer a batch: inline, or on the pool. False when this thread lost the loop meanwhile."""
        if self.inline:
            while batch:  # answering may free pipelined requests for another round
                answered, batch = answer_batch(batch, self.app.handle_predict), []
                self._deliver(answered, batch)
            return True
        if not self.adaptive:
            self.pool.submit(batch)
            return True
        handle = self.app.handle_predict
        lock = self._owner_lock
        while batch:
            done = 0
            try:
                for entry in batch:
                    with lock:  # the clock runs per connection: many fast predicts are not slow
                        if self._owner is not token:
                            break  # too slow: connections not begun go to the pool
                        self._inline_since = time.monotonic()
                    answer_batch((entry,), handle)
                    done += 1
            finally:
                with lock:
                    lost = self._owner is not token
                    if not lost:  # a thread that lost the loop must not touch the new owner's clock
                        self._inline_since = None
            if lost:  # the loop went on in another thread, which sends these answers
                self._rescued.append((batch[:done], batch[done:]))
                self.wake()
                return False
            answered, batch = batch, []
            self._deliver(answered, batch)
        return True

    def _on_wake(self, batch):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        if self.pool is not None and self.pool.threads:
            self._deliver(self.pool.collect(), batch)
        rescued = self._rescued
        while rescued:
            answered, unanswered = rescued.popleft()
            if unanswered:
                self.pool.submit(unanswered)
            self._deliver(answered, batch)
        posted = self.posted
        while posted:
            conn, data = posted.popleft()
            if conn.closed:
                continue
            if data is streams.END:
                self._end_stream(conn, batch)
            elif data is streams.ABORT:
                self._close(conn)
            else:
                self._send(conn, data)

    def _deliver(self, answered, batch):
        for conn, items in answered:
            conn.busy = False
            if conn.closed:  # the client left; its answers are dropped
                self._drop(items)
                continue
            try:
                self._write_replies(conn, items)
                self._after_replies(conn, batch)
            except Exception:
                self._internal_error(conn)

    def _after_replies(self, conn, batch):
        """Once a connection's answers are written: parse what it sent meanwhile, or close."""
        if conn.busy or conn.closed:
            return
        if conn.paused and conn.unsent < OUT_LOW:
            conn.paused = False
            self._update_events(conn)
        if not conn.close_after and conn.buf and conn.state != _LINGER:
            data, conn.buf = conn.buf, _EMPTY
            self._parse(conn, data, batch)
        if conn.eof and not conn.busy and not conn.out:  # nothing more can come from the client
            self._close(conn)

    # -- streams ---------------------------------------------------------

    def post(self, conn, data):
        """From a stream thread: have the I/O thread write ``data`` (or END/ABORT) to ``conn``."""
        self.posted.append((conn, data))
        self.wake()

    def _start_stream(self, conn, stream, rest):
        conn.busy = True
        conn.stream = stream
        conn.behind_stream = rest
        stream.queued = len(stream.head)
        self._send(conn, stream.head)
        streams.start(stream, lambda data: self.post(conn, data))

    def _end_stream(self, conn, batch):
        stream, rest = conn.stream, conn.behind_stream
        conn.stream = conn.behind_stream = None
        conn.busy = False
        if not stream.chunked:  # HTTP/1.0: the end of the body is the end of the connection
            conn.close_after = True
        if rest:
            self._write_replies(conn, rest)
        elif conn.close_after and not conn.out:
            self._finish(conn)
        self._after_replies(conn, batch)

    # -- writing ---------------------------------------------------------

    def _write_replies(self, conn, items):
        chunks = []
        close = False
        metrics = self.metrics
        now = time.monotonic()
        for index, (view, reply) in enumerate(items):
            if reply is None:  # a predict thread failed before answering
                reply = error_reply(500, "internal error", view.head if view else None)
            status, data, close = reply
            if type(data) is streams.StreamBody:
                if chunks:
                    self._send(conn, b"".join(chunks))
                if conn.closed:  # the client left before the answers ahead of the stream
                    data.close()
                    metrics.in_flight -= 1
                    self._drop(items[index + 1:])
                    return
                metrics.by_class[_status_class(status)] += 1
                metrics.in_flight -= 1
                if self._access:
                    self._log_access(view, status, now)
                if close:
                    conn.close_after = True
                    self._drop(items[index + 1:])
                    rest = []
                else:
                    rest = items[index + 1:]
                self._start_stream(conn, data, rest)
                return
            chunks.append(data)
            metrics.by_class[_status_class(status)] += 1
            if view is not None:
                if view.pooled is not None:
                    self.buffers.give_back(view)
                metrics.in_flight -= 1
                metrics.request_seconds.observe(now - view.started)
                if self._access:
                    self._log_access(view, status, now)
            if close:
                break
        self._send(conn, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if close:
            conn.close_after = True
            if not conn.out and not conn.closed:
                self._finish(conn)

    def _log_access(self, view, status, now):
        head = view.head
        access_log.info('%s - "%s %s HTTP/1.%d" %d %.2fms', _peer_text(view.peer), head.method,
                        head.target, head.version, status, (now - view.started) * 1000)

    def _send(self, conn, data):
        if conn.closed:
            return
        if conn.out:
            conn.out.append(data)
            self._queued(conn, len(data))
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        self.metrics.bytes_out += sent
        if conn.stream is not None:
            self._stream_progress(conn.stream, sent)
        if sent < len(data):
            conn.out.append(memoryview(data)[sent:])
            conn.deadline = self.now + self.config.body_timeout
            self._want_write(conn, True)
            self._queued(conn, len(data) - sent)

    def _queued(self, conn, n):
        """Count unsent bytes; a client that does not read its answers stops being read."""
        conn.unsent += n
        if conn.unsent > OUT_HIGH and not conn.paused:
            conn.paused = True
            self._update_events(conn)

    def _flush(self, conn):
        out = conn.out
        while out:
            try:
                sent = conn.sock.send(out[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            conn.deadline = self.now + self.config.body_timeout
            self.metrics.bytes_out += sent
            conn.unsent -= sent
            if conn.stream is not None:
                self._stream_progress(conn.stream, sent)
            if conn.paused and conn.unsent < OUT_LOW and not conn.busy:
                conn.paused = False
                self._update_events(conn)
            if sent < len(out[0]):
                out[0] = memoryview(out[0])[sent:]
                return
            out.popleft()
        self._want_write(conn, False)
        if conn.close_after and conn.stream is None:
            self._finish(conn)
        elif conn.eof and not conn.busy:
            self._close(conn)

    @staticmethod
    def _stream_progress(stream, sent):
        stream.written += sent
        if stream.backlog() < streams.LOW_WATER:
            stream.window.set()

    def _want_write(self, conn, on):
        if conn.writing != on:
            conn.writing = on
            self._update_events(conn)

    def _update_events(self, conn):
        """Register the connection for what it needs now: reading unless paused or at EOF, writing."""
        if conn.closed:
            return
        events = selectors.EVENT_WRITE if conn.writing else 0
        if not conn.eof and not conn.paused:
            events |= selectors.EVENT_READ
        try:
            if events:
                self.sel.modify(conn.sock, events, conn)
            else:
                self.sel.unregister(conn.sock)
        except KeyError:
            if events:
                self.sel.register(conn.sock, events, conn)

    def _finish(self, conn):
        """Close after a final answer: stop sending, drain what the client still sends, then close.

        Closing at once with unread input would reset the connection and could
        destroy the answer before the client reads it.
        """
        if conn.eof:
            self._close(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state = _LINGER
        conn.buf = _EMPTY
        conn.deadline = self.now + LINGER_SECONDS

    # -- housekeeping ----------------------------------------------------

    def _sweep(self, now):
        for conn in list(self.conns.values()):
            if now < conn.deadline:
                continue
            if conn.busy:
                if conn.stream is not None and conn.out:  # a stream the client stopped reading
                    self._close(conn)
                continue
            if conn.state == _LINGER or conn.out:
                self._close(conn)
            elif conn.state == _HEAD and not conn.buf:
                self._close(conn)  # idle keep-alive connection
            else:
                self._send(conn, error_reply(408, "timed out waiting for the request")[1])
                conn.close_after = True
                if not conn.out and not conn.closed:
                    self._finish(conn)
                conn.deadline = now + LINGER_SECONDS
        if self.stopping:
            for conn in list(self.conns.values()):
                self._close_if_idle(conn)

    def _close(self, conn):
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.fd, None)
        self.metrics.connections = len(self.conns)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        conn.out.clear()
        conn.unsent = 0
        conn.buf = _EMPTY
        if conn.body is not None and type(conn.body) is not bytearray:
            conn.body.close()  # a spooled upload that will never complete
        elif conn.body is not None:
            self.buffers.give(conn.body)
        conn.body = None
        if conn.stream is not None:
            conn.stream.cancel()
        if conn.behind_stream:
            self._drop(conn.behind_stream)
            conn.behind_stream = None

    def _drop(self, items):
        """Answers that will never be written: they are no longer in flight."""
        self.metrics.in_flight -= sum(1 for view, _ in items if view is not None)


class BodyBuffers:
    """Receive buffers for Content-Length bodies, reused from one request to the next.

    A fresh multi-megabyte buffer costs more to allocate (zero-filling new
    pages) than to fill from the socket; keeping a few spares, up to
    ``keep_bytes`` in all, makes a large upload cost one copy from the kernel.
    Sizes are rounded up to ``GRAIN`` so that similar bodies share buffers.
    """

    GRAIN = 64 * 1024

    def __init__(self, keep_bytes=32 * 1024 * 1024):
        self.keep_bytes = keep_bytes
        self.spare = []

    def take(self, length):
        size = -(-length // self.GRAIN) * self.GRAIN
        spare = self.spare
        for i in range(len(spare)):
            if len(spare[i]) == size:
                return spare.pop(i)
        return bytearray(size)

    def give(self, buf):
        if len(buf) + sum(len(b) for b in self.spare) <= self.keep_bytes:
            self.spare.append(buf)

    def give_back(self, view):
        """Reuse the buffer behind an answered request, unless something still uses its body."""
        buf, body = view.pooled, view.body
        view.pooled = None
        view.body = b""
        if type(body) is not memoryview:  # the body was copied out; its view may live on
            return
        try:
            body.release()
            # views derived from the body (slices, numpy arrays) survive release(); a
            # bytearray cannot change size while any of them lives
            buf.append(0)
            buf.pop()
        except BufferError:  # something still reads it: leave the buffer to it
            return
        self.give(buf)


def _status_class(status):
    return status // 100 if 100 <= status < 600 else 5


def _is_multipart(content_type):
    return content_type is not None and content_type[:19].lower() == "multipart/form-data"


def _peer_text(peer):
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "-")
