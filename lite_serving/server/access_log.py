"""The access log: one line per answer, refusals included (peer, request line, status, duration,
bytes in and out, request id, user agent, and why a request was refused or failed).

Lines go to the ``lite_serving.access`` logger. A connection records an
answered request as a tuple; once per turn of the loop the tuples are formatted
together. When that logger writes through lite_serving's own stderr handler
(nobody configured logging otherwise), the lines are written in that handler's
format (text, or JSON objects with ``--log-format json``) in one write: a
``logging`` call per request would cost more than the request itself. The lines
are made as UTF-8 bytes (by the compiled twins of :func:`text_lines` and
:func:`json_lines` when the compiled parser is in use), which go to the bytes
under stderr as they are (:func:`utf8_buffer`). When the
application has set up logging of its own, every line goes through ``logging``
as usual, its fields given as the record's attributes (``extra``: ``method``,
``path``, ``status``, ``duration_ms``, ``bytes_in``, ``bytes_out``, ``client``,
``request_id``, ``user_agent``, ``reason``), so that its handlers and formats
apply and may use them.
"""

import codecs
import io
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

    __slots__ = ("enabled", "stream", "binary", "json", "lines", "_stamp", "_prefix", "_written")

    # Seconds between writes: a write per request costs more than the request, and lines held
    # much longer make the request that meets their write wait (at 1 connection, 50 ms held
    # doubled the p99 latency; 2 ms costs neither throughput nor tail latency measurably).
    EVERY = 0.002
    LINES = 256     # lines that are written at once, however soon

    def __init__(self):
        self.enabled = False
        self.stream = None
        self.binary = None
        self.json = False
        self.lines = []
        self._stamp = -1
        self._prefix = ""
        self._written = 0.0

    def start(self):
        """Look at how logging is set up (once the predictor and its logging are in place)."""
        self.enabled = logger.isEnabledFor(INFO)
        self.stream = own_stream(ACCESS) if self.enabled else None
        self.binary = utf8_buffer(self.stream)
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
            # the fields every line of this write shares, written once: each line is the rest
            start = '{"time":"%s","level":"INFO","logger":"%s","pid":%d,' % (
                iso_time(now), ACCESS, os.getpid())
            data = _json_lines(records, start, json_codec.load().dumps)
        else:
            stamp = int(now)
            if stamp != self._stamp:
                self._stamp = stamp
                self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
            start = "%s,%03d INFO lite_serving.access[%d]: " % (
                self._prefix, int(now % 1 * 1000), os.getpid())
            data = _text_lines(records, start)
        try:
            if self.binary is not None:   # UTF-8 already: to the bytes under stream as they are
                stream.flush()   # what was written to stream before goes before
                self.binary.write(data)
                self.binary.flush()
            else:
                stream.write(data.decode())
                stream.flush()
        except (OSError, ValueError):  # stderr closed or full: the log is lost, the server goes on
            pass


def utf8_buffer(stream):
    """The binary stream under the text stream ``stream`` when text written to it reaches it as
    its UTF-8 bytes, unchanged (UTF-8, newlines not translated), else None. sys.stderr is such a
    stream on POSIX systems unless PYTHONIOENCODING or the locale names another encoding."""
    if type(stream) is not io.TextIOWrapper or os.linesep != "\n":
        return None
    try:
        if codecs.lookup(stream.encoding).name != "utf-8":
            return None
        return stream.buffer
    except (LookupError, AttributeError, ValueError):   # no such encoding, no buffer, detached
        return None


def text_lines(records, start):
    """Text access lines, one a record (:func:`text_line`), each after ``start`` (time, level,
    logger, pid), as UTF-8 bytes; a surrogate in them (which UTF-8 cannot carry: a predictor's
    error message may hold one) as its \\uXXXX escape, as stderr's backslashreplace writes it."""
    lines = start + ("\n" + start).join([text_line(record) for record in records]) + "\n"
    return lines.encode("utf-8", "backslashreplace")


def json_lines(records, start, dumps):
    """JSON access lines, one a record, as UTF-8 bytes: ``start`` (the fields every line of the
    write shares, ``"pid":N,`` last), then the record's own (:func:`json_tail`)."""
    lines = start + ("\n" + start).join([json_tail(record, dumps) for record in records]) + "\n"
    return lines.encode()


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
    try:
        return dumps(obj).decode()[1:]
    except TypeError:   # orjson refuses a surrogate (and an int past 64 bits): field by field
        return ",".join([f'"{key}":{json_value(value, dumps)}' for key, value in obj.items()]) + "}"


def json_value(value, dumps):
    """``value`` as JSON text, as ``dumps`` (orjson's) writes it; but ints in decimal whatever
    their size, and text with each surrogate (which orjson refuses) as its \\uXXXX escape, so
    that a predictor's error message holding one (a file name read with surrogateescape...) is
    logged like any other."""
    if type(value) is int:
        return str(value)
    if not isinstance(value, str):
        return dumps(value).decode()
    pieces, begin = ['"'], 0
    for i, char in enumerate(value):
        if "\ud800" <= char <= "\udfff":
            pieces += dumps(value[begin:i]).decode()[1:-1], "\\u%04x" % ord(char)
            begin = i + 1
    pieces += dumps(value[begin:]).decode()[1:-1], '"'
    return "".join(pieces)


try:  # the compiled twins of text_lines and json_lines, when the compiled parser is in use
    from lite_serving.http.parser import access_json_lines as _json_lines
    from lite_serving.http.parser import access_text_lines as _text_lines
except ImportError:
    _text_lines, _json_lines = text_lines, json_lines
