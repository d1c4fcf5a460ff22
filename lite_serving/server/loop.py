"""The selector loop: readiness events to transports, calls from other threads, a once-a-second tick.

It knows nothing of HTTP. A closed transport tells its protocol
(``connection_lost``) once the work that closed it has returned to the loop,
never inside that work: ``Transport.abort`` appends the call to
``closed_this_turn``, which the loop runs after each event it handed out (so
what the next event sees, the connection table and ``--max-connections`` among
it, is current, as it was when the call was synchronous), after the end-of-turn
work (then turning again at once, so that what waits on a closed connection
sees it now), after the turn's other work, and when it ends.

One thread runs the loop at a time; ``hand_over``
starts another thread that takes it over (the dispatch's watchdog uses it
when a predict holds the loop's thread), and the thread that lost it returns
from :meth:`EventLoop.run` at its next check without touching a socket again.
"""

import collections
import selectors
import socket
import threading
import time

from lite_serving.process.logs import get_logger
from lite_serving.server.transport import flush_all

log = get_logger("lite_serving")

_WAKE = object()
EVENT_READ, EVENT_WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def _one_second():
    return 1.0


class _Listening:
    """Selector data of a listening socket (anything with ``accept``)."""

    __slots__ = ("sock",)

    def __init__(self, sock):
        self.sock = sock


class EventLoop:
    """Selector, listening sockets, wake-up socket and the ownership token of the running thread."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.now = time.monotonic()
        self.owner_lock = threading.Lock()
        self.owner = None               # token of the thread running the loop
        self.stopped = False            # set by stop(): the running thread leaves the loop
        self.finished = threading.Event()   # set once the loop has closed everything
        self.on_accept = None           # callable(listening socket), set by the server
        self.after_turn = None          # callable(token) → False when this thread lost the loop
        self.wait_at_most = None        # callable() → seconds select may block (0: work queued)
        self.on_tick = None             # callable(now), about once a second
        self.on_idle = None             # callable(), when select found nothing to do
        self.on_close = None            # callable(), when the loop ends
        # Writes made during a turn wait for its end (see Transport.write): the turn's answers
        # then leave in one burst of send calls, between the Python work and not within it.
        self.corked = False
        self.corked_transports = []
        self.closed_this_turn = []      # connection_lost calls of transports closed this turn
        self._posted = collections.deque()
        self._wake_pending = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._next_tick = 0.0

    # -- any thread --------------------------------------------------------

    def wake(self):
        """Break the loop out of ``select`` (any thread, signal handlers included)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def call_soon_threadsafe(self, fn, *args):
        """Run ``fn(*args)`` on the loop's thread at its next turn."""
        self._posted.append((fn, args))
        if not self._wake_pending:
            self._wake_pending = True
            self.wake()

    def stop(self):
        self.stopped = True
        self.wake()

    # -- the loop's thread --------------------------------------------------

    def add_listener(self, sock):
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, _Listening(sock))

    def pause_listener(self, sock):
        """Stop accepting on ``sock`` (connections wait in its queue, or go to another process)."""
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def resume_listener(self, sock):
        try:
            self.sel.register(sock, selectors.EVENT_READ, _Listening(sock))
        except (KeyError, ValueError):
            pass

    def remove_listener(self, sock):
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def watch(self, transport, events, old):
        if not old:
            self.sel.register(transport.sock, events, transport)
        elif events:
            self.sel.modify(transport.sock, events, transport)
        else:
            self.sel.unregister(transport.sock)

    def forget(self, transport):
        if transport.events:
            try:
                self.sel.unregister(transport.sock)
            except (KeyError, ValueError):
                pass
            transport.events = 0

    def run(self):
        """Run the loop on this thread until :meth:`stop` (or until another thread takes it over)."""
        token = object()
        with self.owner_lock:
            self.owner = token
        self._next_tick = time.monotonic() + 1.0
        self._run(token)

    def hand_over(self):
        """Give the loop to a new thread (call with ``owner_lock`` held)."""
        self.owner = token = object()
        threading.Thread(target=self._run, args=(token,), name="lite_serving-io", daemon=True).start()

    def _run(self, token):
        try:
            self._turns(token)
        except BaseException:
            log.exception("the I/O loop failed")
            raise
        finally:
            if self.owner is token:
                self.owner = None
                try:
                    if self.on_close is not None:
                        self.on_close()
                    self.run_closed()
                finally:
                    self.sel.close()
                    self._wake_r.close()
                    self._wake_w.close()
                    self.finished.set()

    def _turns(self, token):
        """The loop's turns until :meth:`stop`, or until another thread owns the loop. A turn:
        send what the last one wrote, wait for events, hand each out (wake-ups, new
        connections, sockets ready to read or write) and after each tell the protocols of the
        transports it closed, then the end-of-turn work and the tick. The events are handed out
        here, not by a method of their own: this runs once a turn, a call more costs."""
        select = self.sel.select
        wait_at_most = self.wait_at_most or _one_second
        again = False   # a connection closed after the turn's events: turn again at once
        while True:  # (not ``while not self.stopped``: CPython 3.11 specializes a function's
            #        bytecode on calls and on unconditional backward jumps only, and this
            #        function is called once: the test at the top keeps the turn specialized)
            if self.stopped:
                return
            if self.corked_transports:
                self._uncork()
            if self.closed_this_turn:
                self.run_closed()
                again = True
            if again:
                again = False
                events = select(0)
            else:
                events = select(wait_at_most())
            self.now = now = time.monotonic()
            self.corked = True
            if not events:
                self._idle()
            for key, mask in events:
                target = key.data
                if target is _WAKE:
                    self._on_wake()
                elif type(target) is _Listening:
                    self._accept(target.sock)
                elif not target.closed:  # (closed earlier in this turn: nothing to hand out)
                    try:
                        if mask & EVENT_READ:
                            target.on_readable()
                        if mask & EVENT_WRITE and not target.closed:
                            target.on_writable()
                    except Exception:
                        log.exception("internal error while serving a connection; closing it")
                        target.abort()
                if self.closed_this_turn:
                    self.run_closed()
            if self.after_turn is not None and not self.after_turn(token):
                return  # another thread runs the loop now: it sends what waits
            if self.closed_this_turn:
                self.run_closed()
                again = True
            if now >= self._next_tick:
                self._next_tick = now + 1.0
                self.on_tick(now)
            self.corked = False

    def _idle(self):
        """A turn without events: the idle work, if any."""
        if self.on_idle is not None:
            try:
                self.on_idle()
            except Exception:
                self.on_idle = None
                log.exception("internal error in the loop's idle work")

    def _accept(self, sock):
        try:
            self.on_accept(sock)
        except Exception:
            log.exception("internal error while accepting connections")

    def run_closed(self):
        """Tell the protocols of the transports closed since the last call (``connection_lost``)."""
        while self.closed_this_turn:
            calls, self.closed_this_turn = self.closed_this_turn, []
            for connection_lost in calls:
                try:
                    connection_lost()
                except Exception:
                    log.exception("internal error while releasing a closed connection")

    def _uncork(self):
        """Send what the transports were given during the last turn."""
        transports, self.corked_transports = self.corked_transports, []
        try:
            flush_all(transports, self.now)
        except Exception:
            log.exception("internal error while sending answers; closing those connections")
            for transport in transports:
                transport.abort()

    def _on_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._wake_pending = False  # before draining: a call posted from now on wakes again
        posted = self._posted
        while posted:
            fn, args = posted.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("internal error in a call from another thread")
