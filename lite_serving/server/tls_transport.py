"""A TLS connection as a transport: the handshake in the loop, then the :class:`Transport` interface.

:class:`TLSTransport` starts on the accepted plain socket. The first byte the
client sends decides what follows: a TLS record gets a handshake driven by
readiness events (``do_handshake`` raises ``SSLWantReadError`` /
``SSLWantWriteError`` until it is done), after which the HTTP protocol is
attached and sees bytes in and out exactly as over a plain socket; a
cleartext request (its method's first letter where a TLS record belongs) gets
a plain 400 saying to use https, and the connection closes.

Where TLS differs from a plain socket, and how it is handled here:

- A read may need to write, and a write to read (``SSLWantWriteError`` from a
  read, ``SSLWantReadError`` from a write): the interrupted call is retried
  once the readiness it asked for comes.
- Bytes of a record already decrypted wait in the SSL layer, where the
  selector cannot see them (``pending()``): they are read before going back
  to the loop, and as soon as reading is switched back on.
- A write interrupted by ``SSLWantWriteError`` must be retried with the same
  bytes: output is cut into slices of ``WRITE_SLICE`` from the head of the
  queue, so the retry finds the same slice. A slice written counts as progress
  for the write timeout.
- The graceful close sends close_notify before the TCP half-close; after it the
  socket is read raw, and what arrives is dropped while the connection lingers.
"""

import selectors
import socket
import ssl

from lite_serving.http.replies import error_reply
from lite_serving.process.logs import DEBUG, get_logger
from lite_serving.server.access_log import peer_text
from lite_serving.server.transport import RECV_SIZE, Transport

log = get_logger("lite_serving")

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
SNIFFING, HANDSHAKING, OPEN, REFUSING = range(4)
PHASE_NAMES = ("SNIFFING", "HANDSHAKING", "OPEN", "REFUSING")
WRITE_SLICE = 128 * 1024
# A TLS connection opens with a handshake record (0x16); an HTTP request with its method's
# first letter. Anything else is left to OpenSSL to refuse.
_CLEARTEXT_FIRST = frozenset(range(ord("A"), ord("Z") + 1))
CLEARTEXT_MESSAGE = ("this port speaks HTTPS only and the request came as plain HTTP; "
                     "send it to https:// at the same address")
_WantRead, _WantWrite = ssl.SSLWantReadError, ssl.SSLWantWriteError


class TLSTransport(Transport):
    """An accepted socket that becomes TLS (I/O thread only).

    Before the handshake is done its ``protocol`` is a stand-in that only
    holds the handshake's deadline (see :class:`lite_serving.server.tls.PendingTLS`);
    ``on_open(transport)`` attaches the real protocol once it is done.
    """

    __slots__ = ("context", "phase", "handshake_wants", "read_wants_write", "write_wants_read",
                 "on_open")

    def __init__(self, loop, sock, peer, budget, metrics, high, low, context, on_open):
        Transport.__init__(self, loop, sock, peer, budget, metrics, high, low)
        self.context = context
        self.phase = SNIFFING
        self.handshake_wants = _READ
        self.read_wants_write = False    # a read stopped on SSLWantWriteError
        self.write_wants_read = False    # a write stopped on SSLWantReadError
        self.on_open = on_open

    def __repr__(self):
        return f"<TLSTransport {self.peer} {PHASE_NAMES[self.phase]}>"

    # -- from the loop ----------------------------------------------------

    def start(self):
        """Look at the first bytes now: the client often sent its hello with the connection."""
        self._sniff()

    def on_readable(self):
        phase = self.phase
        if phase == OPEN:
            if self.write_wants_read:
                self.write_wants_read = False
                self._flush()
                if self.closed:
                    return
            if self.reading:
                self._read()
        elif phase == HANDSHAKING:
            self._handshake()
        elif phase == SNIFFING:
            self._sniff()
        else:  # refusing: the stand-in protocol drops what comes, and closes at the end
            Transport.on_readable(self)

    def on_writable(self):
        phase = self.phase
        if phase == OPEN:
            if self.read_wants_write:
                self.read_wants_write = False
                if self.reading:
                    self._read()
                if self.closed:
                    return
            if self.out and not self.write_wants_read:
                self._flush()
            else:
                self._watch()
        elif phase == HANDSHAKING:
            self._handshake()

    # -- before the protocol ----------------------------------------------

    def _sniff(self):
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self._watch()
            return
        except OSError:
            self.abort()
            return
        if not first:
            self.abort()  # closed before saying anything
            return
        if first[0] in _CLEARTEXT_FIRST:
            self._refuse_cleartext()
            return
        self.loop.forget(self)  # the selector holds the plain socket object: register the TLS one
        try:
            self.sock = self.context.wrap_socket(self.sock, server_side=True,
                                                 do_handshake_on_connect=False)
        except (OSError, ValueError):
            self.abort()
            return
        self.phase = HANDSHAKING
        self._handshake()

    def _handshake(self):
        try:
            self.sock.do_handshake()
        except _WantRead:
            self.handshake_wants = _READ
            self._watch()
            return
        except _WantWrite:
            self.handshake_wants = _WRITE
            self._watch()
            return
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            if log.isEnabledFor(DEBUG):
                log.debug("TLS handshake with %s failed: %s", peer_text(self.peer), exc)
            self.abort()
            return
        self.phase = OPEN
        self.on_open(self)
        self._watch()

    def _refuse_cleartext(self):
        """Plain HTTP on the TLS port: a plain 400, then drop what else comes until the client leaves."""
        self.phase = REFUSING
        _status, data, _close = error_reply(400, CLEARTEXT_MESSAGE)
        try:
            self.sock.send(data)  # a fresh socket's buffer takes these few hundred bytes
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()
            return
        self.metrics.bytes_out += len(data)
        self.metrics.by_class[4] += 1
        self.protocol.refused()
        self._watch()

    # -- bytes in -----------------------------------------------------------

    def _read(self):
        """Read what the socket and the SSL layer hold, while the protocol wants to read."""
        sock = self.sock
        metrics = self.metrics
        while True:
            protocol = self.protocol
            into = protocol.recv_into
            buf = protocol.get_buffer() if into else None
            try:
                data = sock.recv_into(buf) if into else sock.recv(RECV_SIZE)
            except (_WantRead, BlockingIOError, InterruptedError):
                return
            except _WantWrite:
                self.read_wants_write = True
                self._watch()
                return
            except OSError:
                self.abort()
                return
            finally:
                if into:
                    buf.release()
            n = data if into else len(data)
            if not n:
                protocol.eof_received()
                return
            metrics.bytes_in += n
            if into:
                protocol.buffer_updated(n)
            else:
                protocol.data_received(data)
            # More of the record may wait decrypted in the SSL layer; the selector would not
            # say so. What is still in the kernel, it will.
            if self.closed or not self.reading or not sock.pending():
                return

    def set_reading(self, on):
        if self.reading != on:
            self.reading = on
            self._watch()
            if on and self.phase == OPEN and self.sock.pending():
                self.loop.call_soon_threadsafe(self._read_buffered)

    def _read_buffered(self):
        """Bytes left decrypted in the SSL layer while reading was off (after the current turn)."""
        if self.closed or not self.reading:
            return
        try:
            self._read()
        except Exception:
            log.exception("internal error while serving a connection; closing it")
            self.abort()

    # -- bytes out ----------------------------------------------------------

    def write(self, data):
        """Send ``data`` now, a slice at a time, as far as the socket takes it; queue the rest."""
        if not len(data):
            return  # an empty write would read as "the SSL layer cannot take it now"
        if self.closed or self.out or self.loop.corked:
            # dropped once closed, queued behind what waits, or held for the end of the turn
            Transport.write(self, data)
            return
        self._send_now(data)

    def _send_now(self, data):
        total = len(data)
        view = data if total <= WRITE_SLICE else memoryview(data)
        sent = 0
        while sent < total:
            n = self._send(view if total <= WRITE_SLICE else view[sent:sent + WRITE_SLICE])
            if not n:
                if n is None:
                    return
                break
            sent += n
        if sent:
            self.metrics.bytes_out += sent
            self.progress_at = self.loop.now
        if sent < total:
            self._queue(view[sent:] if sent else data)
            self._watch()

    def _flush(self):
        """Send queued output, a slice at a time, until the socket or the SSL layer stops."""
        out = self.out
        while out:
            first = out[0]
            n = self._send(first if len(first) <= WRITE_SLICE else memoryview(first)[:WRITE_SLICE])
            if not n:
                if n is None:
                    return
                break
            self._took(n)  # a slice, or the whole of a short piece
        self._watch()  # an SSL write may now wait for reading
        self._output_moved()

    def _send(self, piece):
        """Write ``piece`` through the SSL layer: its length once written, 0 when the socket or
        the SSL layer cannot take it now (retried later with the same bytes), None once aborted."""
        try:
            return self.sock.send(piece)
        except (_WantWrite, BlockingIOError, InterruptedError):
            return 0
        except _WantRead:
            self.write_wants_read = True
            return 0
        except OSError:
            self.abort()
            return None

    def shutdown_write(self):
        """close_notify, then the TCP half-close. False when the socket is gone."""
        sock = self.sock
        if self.phase == OPEN:
            try:
                sock.unwrap()
            except OSError:
                pass  # close_notify went out; the client's own is not waited for
        try:
            sock.shutdown(socket.SHUT_WR)  # also leaves the SSL layer: what follows is read raw
        except OSError:
            self.abort()
            return False
        return True

    def _watch(self):
        if self.closed:
            return
        phase = self.phase
        if phase == OPEN:
            events = _WRITE if self.out and not self.write_wants_read or self.read_wants_write else 0
            if self.reading or self.write_wants_read:
                events |= _READ
        elif phase == HANDSHAKING:
            events = self.handshake_wants
        else:
            events = _READ
        if events != self.events:
            self.loop.watch(self, events, self.events)
            self.events = events
