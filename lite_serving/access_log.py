"""The access log: one line per answered request (peer, method, target, version, status, duration).

Lines go to the ``lite_serving.access`` logger. A connection records an
answered request as a tuple; once per turn of the loop the tuples are formatted
together. When that logger writes through lite_serving's own stderr handler
(nobody configured logging otherwise), the lines are written in that handler's
format in one write: a ``logging`` call per request would cost more than the
request itself. When the application has set up logging of its own, every line
goes through ``logging`` as usual, so its handlers and formats apply.
"""

import os
import time

from .logs import ACCESS, INFO, get_logger, own_stream

logger = get_logger(ACCESS)


def peer_text(peer):
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "-")


class AccessLog:
    """Access lines of the I/O thread, batched when lite_serving owns the handler."""

    __slots__ = ("enabled", "stream", "lines", "_stamp", "_prefix", "_written")

    # Seconds between writes: a write per request costs more than the request, and lines held
    # much longer make the request that meets their write wait (at 1 connection, 50 ms held
    # doubled the p99 latency; 2 ms costs neither throughput nor tail latency measurably).
    EVERY = 0.002
    LINES = 256     # lines that are written at once, however soon

    def __init__(self):
        self.enabled = False
        self.stream = None
        self.lines = []
        self._stamp = -1
        self._prefix = ""
        self._written = 0.0

    def start(self):
        """Look at how logging is set up (once the predictor and its logging are in place)."""
        self.enabled = logger.isEnabledFor(INFO)
        self.stream = own_stream(ACCESS) if self.enabled else None

    @staticmethod
    def prefix(peer):
        """The start of the lines of a client's requests (kept by its connection)."""
        return f'{peer_text(peer)} - "'

    def record(self, prefix, head, status, seconds):
        """One answered request (the connections append to ``lines`` themselves: the same)."""
        self.lines.append((prefix, head, status, seconds))

    def flush_some(self, now):
        """Once per turn of the loop: write what gathered, at most every ``EVERY`` seconds
        unless ``LINES`` are waiting (a write per request would cost more than the request)."""
        if self.lines and (now - self._written >= self.EVERY or len(self.lines) >= self.LINES):
            self._written = now
            self.flush()

    def due_in(self, now, longest):
        """Seconds until the lines held are due to be written (``longest`` when none are held)."""
        if not self.lines:
            return longest
        return min(longest, max(0.0, self._written + self.EVERY - now))

    def flush(self):
        """Write the lines gathered: in one write, or through ``logging`` when the application
        configured it."""
        records = self.lines
        if not records:
            return
        lines = [f'{prefix}{head.method} {head.target} HTTP/1.{head.version}" {status} '
                 f'{seconds * 1000:.2f}ms' for prefix, head, status, seconds in records]
        records.clear()
        stream = self.stream
        if stream is None:
            for line in lines:
                logger.info("%s", line)
            return
        now = time.time()
        stamp = int(now)
        if stamp != self._stamp:
            self._stamp = stamp
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
        head = "%s,%03d INFO lite_serving.access[%d]: " % (self._prefix, int(now % 1 * 1000),
                                                         os.getpid())
        try:
            stream.write(head + ("\n" + head).join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):  # stderr closed or full: the log is lost, the server goes on
            pass
