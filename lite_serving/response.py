"""Responses: the public :class:`Response` and the bytes of a response head.

Every answer is framed with Content-Length (or chunked when streamed) and
carries ``Server`` and ``Date``; the Date text is rebuilt at most once a second.
"""

import time

SERVER_NAME = b"lite_serving"

# Reason phrases of the final statuses (RFC 9110 §15 and the registry), without importing http
_REASONS = {
    200: b"OK", 201: b"Created", 202: b"Accepted", 203: b"Non-Authoritative Information",
    204: b"No Content", 205: b"Reset Content", 206: b"Partial Content", 207: b"Multi-Status",
    208: b"Already Reported", 226: b"IM Used", 300: b"Multiple Choices",
    301: b"Moved Permanently", 302: b"Found", 303: b"See Other", 304: b"Not Modified",
    305: b"Use Proxy", 307: b"Temporary Redirect", 308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 402: b"Payment Required", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 406: b"Not Acceptable",
    407: b"Proxy Authentication Required", 408: b"Request Timeout", 409: b"Conflict",
    410: b"Gone", 411: b"Length Required", 412: b"Precondition Failed",
    413: b"Request Entity Too Large", 414: b"Request-URI Too Long",
    415: b"Unsupported Media Type", 416: b"Requested Range Not Satisfiable",
    417: b"Expectation Failed", 418: b"I'm a Teapot", 421: b"Misdirected Request",
    422: b"Unprocessable Entity", 423: b"Locked", 424: b"Failed Dependency", 425: b"Too Early",
    426: b"Upgrade Required", 428: b"Precondition Required", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates", 507: b"Insufficient Storage", 508: b"Loop Detected",
    510: b"Not Extended", 511: b"Network Authentication Required",
}
_status_lines = {}
_date = [0, b""]
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds):
    """IMF-fixdate (RFC 9110 §5.6.7), independent of the locale."""
    t = time.gmtime(seconds)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


class InvalidResponse(ValueError):
    """An answer that must not go on the wire: bad status, header name or header value."""


# RFC 9110 §5.1 field-name = token; §5.5 field-value: VCHAR, obs-text, SP and HTAB, no other CTL.
# A value is valid when deleting every allowed byte leaves nothing (bytes.translate, no regex).
_TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))


def _is_token(name):
    return bool(name) and not name.translate(None, _TCHARS)


def _is_value(value):
    return not value.translate(None, _VALUE_BYTES)


def _are_field_lines(block):
    """``block`` is zero or more ``name:value\r\n`` lines (name a token, value a field value)."""
    if not block:
        return True
    if not block.endswith(b"\r\n"):
        return False
    for line in block[:-2].split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not _is_token(name) or not _is_value(value):
            return False
    return True


_good_values = {None}     # content types and header blocks already checked (bounded)
_GOOD_VALUES_LIMIT = 512


def status_line(status):
    """``b"HTTP/1.1 200 OK\\r\\n"`` for a final status (200-599); InvalidResponse otherwise."""
    line = _status_lines.get(status)
    if line is None:
        if type(status) is not int or not 200 <= status <= 599:
            raise InvalidResponse(f"status {status!r} cannot be sent as an answer; "
                                  "use a status from 200 to 599")
        reason = _REASONS.get(status, b"Unknown")
        line = _status_lines[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason)
    return line


def _check_fields(content_type, extra):
    """The wire gate for header fields: every value and line must be a valid field (RFC 9110 §5).

    Values already found valid are remembered (a bounded set), so the usual
    answer costs one set lookup.
    """
    if content_type is not None and content_type not in _good_values:
        if type(content_type) is not bytes or not _is_value(content_type):
            raise InvalidResponse(f"invalid Content-Type {content_type!r}: a header value "
                                  "may not hold CR, LF, NUL or other control characters")
        if len(_good_values) < _GOOD_VALUES_LIMIT:
            _good_values.add(content_type)
    if extra and extra not in _good_values:
        if not _are_field_lines(extra):
            raise InvalidResponse(f"invalid header lines {extra!r}: names must be tokens and "
                                  "values may not hold CR, LF, NUL or other control characters")
        if len(_good_values) < _GOOD_VALUES_LIMIT:
            _good_values.add(extra)


def server_and_date():
    """The ``Server`` and ``Date`` header lines for the current second."""
    now = int(time.time())
    if now != _date[0]:
        _date[1] = b"Server: %s\r\nDate: %s\r\n" % (SERVER_NAME, http_date(now).encode())
        _date[0] = now
    return _date[1]


def connection_header(version, keep_alive):
    """The Connection line a response needs to say what happens to the connection."""
    if not keep_alive:
        return b"Connection: close\r\n"
    if version == 0:
        return b"Connection: keep-alive\r\n"
    return b""


def build_head(status, content_type, length, extra=b"", version=1, keep_alive=True, own=b""):
    """A full response head; the one place answer heads are built and checked.

    ``content_type`` is bytes or None; ``extra`` holds ready header lines;
    ``own`` lines the server made from values known to be valid (the request
    id), added unchecked; ``length`` None leaves Content-Length out (204 and
    304 answers have none).
    """
    if extra or content_type not in _good_values:
        _check_fields(content_type, extra)
    if own:
        extra += own
    conn = b"" if keep_alive and version else connection_header(version, keep_alive)
    if length is None:
        ctype = b"" if content_type is None else b"Content-Type: %s\r\n" % content_type
        return b"%s%s%s%s%s\r\n" % (status_line(status), server_and_date(), ctype, extra, conn)
    if content_type is None:
        return b"%s%sContent-Length: %d\r\n%s%s\r\n" % (
            status_line(status), server_and_date(), length, extra, conn)
    return b"%s%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s\r\n" % (
        status_line(status), server_and_date(), content_type, length, extra, conn)


def build_stream_head(status, content_type, extra=b"", version=1, keep_alive=True, own=b""):
    """The head of a streamed answer: chunked on HTTP/1.1; on HTTP/1.0 the body ends at close."""
    _check_fields(content_type, extra)
    extra += own
    if version == 0:
        framing, conn = b"", b"Connection: close\r\n"
    else:
        framing, conn = b"Transfer-Encoding: chunked\r\n", connection_header(version, keep_alive)
    ctype = b"Content-Type: %s\r\n" % content_type if content_type else b""
    return b"%s%s%s%s%s%s\r\n" % (status_line(status), server_and_date(), ctype, framing, extra, conn)


def has_body(status, method):
    """Whether an answer carries a body: never for 204, 304 or a HEAD request (RFC 9110 §6.4.1)."""
    return status != 204 and status != 304 and method != "HEAD"


class _CORS:
    """``--cors-allow-origins``: None reflects every origin with credentials (the reference's
    way); a frozenset allows those origins only; ``any_origin`` ("*") allows every origin
    without credentials."""

    origins = None
    any_origin = False


def set_cors_origins(origins):
    """Which origins the CORS lines allow (``--cors-allow-origins``; empty: every one, with
    credentials)."""
    _CORS.origins = frozenset(origins) if origins else None
    _CORS.any_origin = "*" in (origins or ())


def cors_allows(origin):
    """Whether a browser calling from ``origin`` may read the answers."""
    return _CORS.origins is None or _CORS.any_origin or origin in _CORS.origins


_ANY_ORIGIN = b"Access-Control-Allow-Origin: *\r\n"
_VARY = b"Vary: Origin\r\n"


def cors_headers(origin):
    """CORS lines added to every answer of a request that carries ``Origin``."""
    if _CORS.origins is not None:
        if _CORS.any_origin:
            return _ANY_ORIGIN   # never with credentials: browsers refuse "*" with them
        if origin not in _CORS.origins:
            return _VARY
    return b"Access-Control-Allow-Origin: %s\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n" % (
        origin.encode("latin-1"),)


# fields the server itself frames; a predictor's own value for them is left out
FRAMING_FIELDS = frozenset(("content-length", "transfer-encoding", "connection", "content-type"))


def header_lines(pairs):
    """A predictor's ``[(name, value)]`` → checked header lines.

    Part of the wire gate: a name must be a token and a value may hold no CR,
    LF, NUL or other control character (RFC 9110 §5.1, §5.5), else
    InvalidResponse. Fields the server frames itself (``FRAMING_FIELDS``) are
    left out.
    """
    out = []
    for name, value in pairs:
        name = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if name.lower() in FRAMING_FIELDS:
            continue
        value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
        try:
            raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1").strip(b" \t")
        except UnicodeEncodeError:
            raise InvalidResponse(f"header {name!r}: {value!r} is not latin-1 text") from None
        if not _is_token(raw_name):
            raise InvalidResponse(f"invalid header name {name!r}: a name must be a token")
        if not _is_value(raw_value):
            raise InvalidResponse(f"invalid value of header {name!r}: {value!r} holds CR, LF, "
                                  "NUL or another control character")
        out.append(b"%s: %s\r\n" % (raw_name, raw_value))
    return b"".join(out)


class Response:
    """What ``predict`` may return to choose status, headers and media type itself.

    ``body`` is bytes, str (UTF-8 encoded), or an iterable (a generator) of
    bytes/str pieces, streamed with chunked transfer coding as they are
    produced; ``headers`` a dict or a list of
    ``(name, value)`` pairs. ``mimetype`` gets ``; charset=utf-8`` added for
    text types, ``content_type`` is used as given.
    """

    __slots__ = ("body", "status", "headers", "content_type")

    def __init__(self, body=b"", status=200, headers=None, mimetype=None, content_type=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.body = body
        self.status = int(status)
        if headers is None:
            headers = []
        elif isinstance(headers, dict):
            headers = list(headers.items())
        else:
            headers = list(headers)
        self.headers = headers
        if content_type is None:
            for name, value in headers:
                if str(name).lower() == "content-type":
                    content_type = value
                    break
        if content_type is None:
            mimetype = mimetype or "text/plain"
            if mimetype.startswith("text/") or mimetype in ("application/javascript", "application/xml"):
                content_type = mimetype + "; charset=utf-8"
            else:
                content_type = mimetype
        self.content_type = content_type

    @property
    def status_code(self):
        return self.status

    @property
    def mimetype(self):
        return self.content_type.split(";", 1)[0].strip()

    def __repr__(self):
        return f"<Response {self.status} {self.content_type}>"
