"""A client socket as a connection's protocol sees it: bytes in, bytes out, flow control.

The transport owns the non-blocking socket and its unsent output; it knows
nothing of HTTP. It calls its protocol back:

- ``data_received(bytes)``; or, while the protocol's ``recv_into`` is true,
  ``get_buffer()`` → a writable memoryview to receive into, then ``buffer_updated(n)``;
- ``eof_received()`` when the client closes its sending side;
- ``pause_writing()`` / ``resume_writing()`` when unsent output crosses the
  high / low water marks (the protocol's output budget);
- ``write_drained()`` when every byte written has gone to the socket (after a backlog, or
  when the protocol set ``drain_wanted``: output written during a turn usually goes at once);
- ``connection_lost()`` once, after the socket is closed: when the work that closed it
  has returned to the loop (``loop.closed_this_turn``), never from inside the call that
  closed it, so a protocol that writes, reads or aborts never finds itself closed under
  its own feet. Until then ``closed`` is true and writes are dropped.

Reading is switched on and off by the protocol (``set_reading``). Unsent
bytes are counted in the server's :class:`~lite_serving.server.request_body.MemoryBudget`.
"""

import collections
import selectors
import socket

RECV_SIZE = 262144
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Transport:
    """One accepted socket, driven by the loop (I/O thread only)."""

    __slots__ = ("sock", "fd", "peer", "loop", "protocol", "out", "unsent", "events", "reading",
                 "write_paused", "high", "low", "budget", "metrics", "progress_at", "closed",
                 "held", "drain_wanted")

    def __init__(self, loop, sock, peer, budget, metrics, high, low):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.loop = loop
        self.protocol = None
        self.out = collections.deque()   # bytes not yet taken by the socket
        self.unsent = 0
        self.events = 0                  # what the selector watches now
        self.reading = True
        self.write_paused = False
        self.high = high
        self.low = low
        self.budget = budget
        self.metrics = metrics
        self.progress_at = loop.now      # last time the socket took output
        self.closed = False
        self.held = None                 # output waiting for the end of the loop's turn
        self.drain_wanted = False        # the protocol waits for write_drained

    # -- from the loop ----------------------------------------------------

    def on_readable(self):
        protocol = self.protocol
        if protocol.recv_into:
            buf = protocol.get_buffer()
            try:
                n = self.sock.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.abort()
                return
            finally:
                buf.release()
            if n == 0:
                protocol.eof_received()
                return
            self.metrics.bytes_in += n
            protocol.buffer_updated(n)
            return
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        if not data:
            protocol.eof_received()
            return
        self.metrics.bytes_in += len(data)
        protocol.data_received(data)

    def on_writable(self):
        out = self.out
        sock = self.sock
        while out:
            try:
                sent = sock.send(out[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.abort()
                return
            if not self._took(sent):
                break
        self._output_moved()

    def _took(self, sent):
        """The socket took ``sent`` bytes from the head of the output; False when only part of it."""
        self.progress_at = self.loop.now
        self.metrics.bytes_out += sent
        self.unsent -= sent
        self.budget.give(sent)
        out = self.out
        if sent < len(out[0]):
            out[0] = memoryview(out[0])[sent:]
            return False
        out.popleft()
        return True

    def _output_moved(self):
        """Queued output went out: resume the protocol below the low water mark, and tell it
        once everything is out."""
        if self.write_paused and self.unsent <= self.low:
            self.write_paused = False
            self.protocol.resume_writing()
            if self.closed:
                return
        if not self.out:
            self._watch()
            self.drain_wanted = False
            self.protocol.write_drained()

    # -- for the protocol -------------------------------------------------

    def start(self):
        """Begin watching the socket (once its protocol is attached)."""
        self._watch()

    def write(self, data):
        """Send ``data`` as far as the socket takes it; queue the rest.

        During a turn of the loop the bytes wait for the turn's end (``flush``), so
        that the answers of a turn go out together.
        """
        if self.closed:
            return
        if self.out:
            self._queue(data)
            return
        if self.loop.corked:
            held = self.held
            if held is None:
                self.held = data
                self.progress_at = self.loop.now  # the write timeout counts from now
                self.loop.corked_transports.append(self)
            else:
                self.held = held + data
            self.unsent += len(data)
            return
        self._send_now(data)

    def _send_now(self, data):
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.abort()
            return
        self.metrics.bytes_out += sent
        if sent:
            self.progress_at = self.loop.now
        if sent < len(data):
            self._queue(memoryview(data)[sent:] if sent else data)
            self._watch()

    def flush(self):
        """Send what the turn held back (see :func:`flush_all`)."""
        held, self.held = self.held, None
        if held is None or self.closed:
            return
        self.unsent -= len(held)
        self._send_now(held)
        if not self.out and self.drain_wanted and not self.closed:
            self.drain_wanted = False
            self.protocol.write_drained()

    def _queue(self, data):
        n = len(data)
        if not self.out:  # the write timeout counts from when output starts to wait
            self.progress_at = self.loop.now
        self.out.append(data)
        self.unsent += n
        self.budget.take(n)
        if not self.write_paused and self.unsent > self.high:
            self.write_paused = True
            self.protocol.pause_writing()

    def set_reading(self, on):
        if self.reading != on:
            self.reading = on
            self._watch()

    def shutdown_write(self):
        """Half-close: the client sees the end of the answers. False when the socket is gone."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.abort()
            return False
        return True

    def abort(self):
        """Close the socket now, dropping unsent output; the protocol hears connection_lost once
        this work has returned to the loop."""
        if self.closed:
            return
        if self.held is not None and not self.out:  # written this turn: it goes out as it would have
            held, self.held = self.held, None
            self.unsent -= len(held)
            try:
                self.sock.send(held)
            except OSError:
                pass
        self.closed = True
        self.loop.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        self.out.clear()
        if self.held is not None:
            self.unsent -= len(self.held)
            self.held = None
        self.budget.give(self.unsent)
        self.unsent = 0
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            self.loop.closed_this_turn.append(protocol.connection_lost)

    def _watch(self):
        """Have the selector watch for what is needed now: reading when on, writing while output waits."""
        if self.closed:
            return
        events = _WRITE if self.out else 0
        if self.reading:
            events |= _READ
        if events != self.events:
            self.loop.watch(self, events, self.events)
            self.events = events


def flush_all(transports, now):
    """At the end of a turn of the loop: send what each transport was given during it.

    The answers of a turn leave in one burst of send calls, after the Python work
    and not interleaved with it. This is :meth:`Transport.flush` for plain sockets,
    written out once for the whole list: it runs for every answer.
    """
    for transport in transports:
        held = transport.held
        if held is None or transport.closed:
            continue
        if type(transport) is not Transport:
            transport.flush()
            continue
        transport.held = None
        n = len(held)
        transport.unsent -= n
        try:
            sent = transport.sock.send(held)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            transport.abort()
            continue
        transport.metrics.bytes_out += sent
        if sent:
            transport.progress_at = now
        if sent < n:
            transport._queue(memoryview(held)[sent:] if sent else held)
            transport._watch()
        elif transport.drain_wanted:
            transport.drain_wanted = False
            transport.protocol.write_drained()
