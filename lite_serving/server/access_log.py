"""The access log: one line per answer, refusals included (peer, request line, status, duration,
bytes in and out, request id, user agent, and why a request was refused or failed).

Lines go to the ``lite_serving.access`` logger. A connection records an
answered request as a tuple; once per turn of the loop the tuples are formatted
together. When that logger writes through lite_serving's own stderr handler
(nobody configured logging otherwise), the lines are written in that handler's
format (text, or JSON objects with ``--log-format json``) in one write: a
``logging`` call per request would cost more than the request itself. When the
application has set up logging of its own, every line goes through ``logging``
as usual, its fields given as the record's attributes (``extra``: ``method``,
``path``, ``status``, ``duration_ms``, ``bytes_in``, ``bytes_out``, ``client``,
``request_id``, ``user_agent``, ``reason``), so that its handlers and formats
apply and may use them.
"""

import os
import time

from lite_serving.codecs import json_codec
from lite_serving.process.logs import ACCESS, INFO, get_logger, iso_time, json_wanted, own_stream

logger = get_logger(ACCESS)


def peer_text(peer):
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "-")


def text_line(record):
    """An access line in text: ``peer - "request line" status duration in out id "agent"``, then
    `` -- reason`` for a refused or failed request."""
    client, head, status, seconds, reason, sent = record
    if head is None:  # refused before a request line could be read
        line = f'{client} - "-" {status} {seconds * 1000:.2f}ms - {sent} - "-"'
    else:
        agent = head.user_agent
        if agent is None:
            agent = "-"
        elif '"' in agent:
            agent = agent.replace('"', '\\"')
        length = head.content_length
        line = (f'{client} - "{head.method} {head.target} HTTP/1.{head.version}" {status} '
                f'{seconds * 1000:.2f}ms {length if length >= 0 else "-" if head.chunked else 0} '
                f'{sent} {head.request_id or "-"} "{agent}"')
    return line + " -- " + reason if reason else line


def fields(record):
    """An access line's fields, as JSON lines carry them and ``logging`` records get them."""
    client, head, status, seconds, reason, sent = record
    if head is None:
        method = target = length = rid = agent = None
    else:
        method, target, rid, agent = head.method, head.target, head.request_id, head.user_agent
        length = head.content_length
        if length < 0:
            length = None if head.chunked else 0
    return {"method": method, "path": target, "status": status,
            "duration_ms": round(seconds * 1000, 3), "bytes_in": length, "bytes_out": sent,
            "client": client, "request_id": rid, "user_agent": agent, "reason": reason}


class AccessLog:
    """Access lines of the I/O thread, batched when lite_serving owns the handler."""

    __slots__ = ("enabled", "stream", "json", "lines", "_stamp", "_prefix", "_written")

    # Seconds between writes: a write per request costs more than the request, and lines held
    # much longer make the request that meets their write wait (at 1 connection, 50 ms held
    # doubled the p99 latency; 2 ms costs neither throughput nor tail latency measurably).
    EVERY = 0.002
    LINES = 256     # lines that are written at once, however soon

    def __init__(self):
        self.enabled = False
        self.stream = None
        self.json = False
        self.lines = []
        self._stamp = -1
        self._prefix = ""
        self._written = 0.0

    def start(self):
        """Look at how logging is set up (once the predictor and its logging are in place)."""
        self.enabled = logger.isEnabledFor(INFO)
        self.stream = own_stream(ACCESS) if self.enabled else None
        self.json = json_wanted()

    @staticmethod
    def prefix(peer):
        """What the lines of a client's requests start with (kept by its connection)."""
        return peer_text(peer)

    def record(self, prefix, head, status, seconds, reason=None, sent=0):
        """One answer (the connections append to ``lines`` themselves: the same)."""
        self.lines.append((prefix, head, status, seconds, reason, sent))

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
        self.lines = []
        stream = self.stream
        if stream is None:
            for record in records:
                logger.info("%s", text_line(record), extra=fields(record))
            return
        now = time.time()
        if self.json:
            text = self._json_lines(records, now)
        else:
            stamp = int(now)
            if stamp != self._stamp:
                self._stamp = stamp
                self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
            head = "%s,%03d INFO lite_serving.access[%d]: " % (self._prefix, int(now % 1 * 1000),
                                                             os.getpid())
            text = head + ("\n" + head).join([_access_text(record) for record in records]) + "\n"
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or full: the log is lost, the server goes on
            pass

    @staticmethod
    def _json_lines(records, now):
        """One JSON object a line: the fields of every log line, then the access line's
        (:func:`json_tail`)."""
        dumps = json_codec.load().dumps
        # the fields every line of this write shares, written once: each line is the rest
        start = '{"time":"%s","level":"INFO","logger":"%s","pid":%d,' % (iso_time(now), ACCESS,
                                                                         os.getpid())
        out = [_access_json(record, dumps) for record in records]
        return start + ("\n" + start).join(out) + "\n"


def json_tail(record, dumps):
    """An access line's JSON object after the fields every line shares (``"message":`` on): the
    fields of :func:`fields`, built here in one dict literal (this runs once per request)."""
    client, head, status, seconds, reason, sent = record
    if head is None:
        obj = {"message": f"- - {status} -- {reason}", **fields(record)}
    else:
        method, target, length = head.method, head.target, head.content_length
        obj = {"message": f"{method} {target} {status}" + (" -- " + reason if reason else ""),
               "method": method, "path": target, "status": status,
               "duration_ms": round(seconds * 1000, 3),
               "bytes_in": length if length >= 0 else None if head.chunked else 0,
               "bytes_out": sent, "client": client, "request_id": head.request_id,
               "user_agent": head.user_agent, "reason": reason}
    # as text at once: orjson's bytes, kept alive by the hundred, cost several times the
    # encoding itself (their buffers are not reused)
    return dumps(obj).decode()[1:]


try:  # the compiled twins of text_line and json_tail, when the compiled parser is in use
    from lite_serving.http.parser import access_json as _access_json
    from lite_serving.http.parser import access_text as _access_text
except ImportError:
    _access_text, _access_json = text_line, json_tail
