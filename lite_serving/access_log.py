"""The access log: one line per answered request (peer, method, target, version, status, duration).

Lines go to the ``lite_serving.access`` logger. When that logger writes
through lite_serving's own stderr handler (nobody configured logging
otherwise), lines are formatted here, in that handler's format, and written in
one batch per turn of the loop: a ``logging`` call per request would cost more
than the request itself. When the application has set up logging of its own,
every line goes through ``logging`` as usual, so its handlers and formats apply.
"""

import logging
import os
import time

logger = logging.getLogger("lite_serving.access")


def peer_text(peer):
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "-")


class AccessLog:
    """Access lines of the I/O thread, batched when lite_serving owns the handler."""

    __slots__ = ("enabled", "stream", "lines", "_stamp", "_prefix")

    def __init__(self):
        self.enabled = False
        self.stream = None
        self.lines = []
        self._stamp = -1
        self._prefix = ""

    def start(self):
        """Look at how logging is set up (once the predictor and its logging are in place)."""
        self.enabled = logger.isEnabledFor(logging.INFO)
        self.stream = None
        if not self.enabled or logger.handlers or not logger.propagate:
            return
        parent = logger.parent
        handlers = parent.handlers if parent is not None else []
        if (len(handlers) == 1 and getattr(handlers[0], "lite_serving_own", False)
                and not parent.propagate):
            self.stream = handlers[0].stream

    def record(self, peer, head, status, seconds):
        line = '%s - "%s %s HTTP/1.%d" %d %.2fms' % (peer_text(peer), head.method, head.target,
                                                    head.version, status, seconds * 1000)
        if self.stream is None:
            logger.info("%s", line)
        else:
            self.lines.append(line)

    def flush(self):
        lines = self.lines
        if not lines:
            return
        now = time.time()
        stamp = int(now)
        if stamp != self._stamp:
            self._stamp = stamp
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
        head = "%s,%03d INFO lite_serving.access[%d]: " % (self._prefix, int(now % 1 * 1000),
                                                         os.getpid())
        text = head + ("\n" + head).join(lines) + "\n"
        lines.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or full: the log is lost, the server goes on
            pass
