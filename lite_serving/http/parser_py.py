"""HTTP/1.1 request framing as pure functions of bytes (RFC 9112).

This is the readable original of the request parser. ``_speedups/parser_c.pyx``
compiles the same rules, in the same order, with the same error statuses and
messages; ``lite_serving.http.parser`` picks one of the two at import time.

Nothing here touches a socket: bytes go in, a :class:`RequestHead` (or an
incomplete-input ``None``) comes out, and malformed input raises
:class:`ParseError` carrying the HTTP status to answer with.
"""

import re

from lite_serving.http.limits import (
    MAX_CHUNK_LINE,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_TARGET,
    QUERY_ERRORS,
    TLS_ON_PLAIN_PORT,
    ParseError,
)

__all__ = [
    "ParseError", "RequestHead", "ChunkedDecoder", "parse_head", "parse_query",
    "MAX_HEAD", "MAX_HEADERS", "MAX_TARGET", "MAX_CHUNK_LINE",
]


# RFC 9110 §5.6.2: tchar
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# RFC 9110 §5.5: field-value = VCHAR / obs-text / SP / HTAB, no CTLs
_FIELD_BAD = frozenset(set(range(0x20)) - {0x09}) | {0x7F}
# chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )  RFC 9112 §7.1.1
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*")


class RequestHead:
    """The parsed request line and header section of one request.

    ``end`` is the offset just past the blank line, where the body starts.
    ``content_length`` is -1 when the request has no Content-Length.
    ``fields`` holds ``(lowercase name, value)`` pairs, latin-1 decoded, in
    arrival order; the few fields the server itself needs are lifted out.
    """

    __slots__ = ("method", "target", "path", "query", "version", "fields", "end",
                 "content_length", "chunked", "keep_alive", "expect_continue",
                 "content_type", "accept", "origin", "request_id", "user_agent")

    def __repr__(self):
        return f"<RequestHead {self.method} {self.target} HTTP/1.{self.version}>"


def _is_token(b):
    return len(b) > 0 and all(c in _TCHAR for c in b)


def _check_field_value(value):
    for c in value:
        if c in _FIELD_BAD:
            raise ParseError(400, "invalid character in header field value")


def _split_field(line):
    """One ``name: value`` line (RFC 9112 §5) → (lowercase name bytes, value bytes)."""
    if line[0] in (0x20, 0x09):
        raise ParseError(400, "obsolete line folding is not allowed")
    colon = line.find(b":")
    if colon <= 0:
        raise ParseError(400, "header field without a name or colon")
    name = line[:colon]
    if not _is_token(name):
        raise ParseError(400, "invalid header field name")
    value = line[colon + 1:].strip(b" \t")
    _check_field_value(value)
    return name.lower(), value


def _split_target(method, target):
    """Request target (RFC 9112 §3.2) → (path, query) as latin-1 text."""
    first = target[0]
    if first == 0x2F:  # origin-form "/..."
        rest = target
    elif target == b"*":
        if method != b"OPTIONS":
            raise ParseError(400, "asterisk-form target is only valid for OPTIONS")
        return "*", ""
    else:
        lower = target[:8].lower()
        if lower.startswith(b"http://"):
            after = target[7:]
        elif lower.startswith(b"https://"):
            after = target[8:]
        else:
            raise ParseError(400, "invalid request target")
        cut = len(after)
        for i, c in enumerate(after):
            if c == 0x2F or c == 0x3F:
                cut = i
                break
        if cut == 0:
            raise ParseError(400, "absolute-form target without a host")
        rest = after[cut:]
        if not rest or rest[0] == 0x3F:
            rest = b"/" + rest
    q = rest.find(b"?")
    if q < 0:
        return rest.decode("latin-1"), ""
    return rest[:q].decode("latin-1"), rest[q + 1:].decode("latin-1")


def _parse_version(version):
    if (len(version) != 8 or not version.startswith(b"HTTP/") or version[6] != 0x2E
            or not (0x30 <= version[5] <= 0x39) or not (0x30 <= version[7] <= 0x39)):
        raise ParseError(400, "invalid HTTP version")
    if version == b"HTTP/1.1":
        return 1
    if version == b"HTTP/1.0":
        return 0
    raise ParseError(505, "HTTP version not supported; use HTTP/1.1 or HTTP/1.0")


def _transfer_codings(values):
    """Transfer-Encoding field values → whether the body is chunked (RFC 9112 §6.1)."""
    codings = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t").lower()
            if not item:
                continue
            if not _is_token(item):
                raise ParseError(400, "invalid transfer coding")
            codings.append(item)
    if not codings or codings[-1] != b"chunked":
        raise ParseError(400, "chunked must be the final transfer coding")
    if codings.count(b"chunked") > 1:
        raise ParseError(400, "chunked applied more than once")
    if len(codings) > 1:
        raise ParseError(501, "unsupported transfer coding; only chunked is implemented")
    return True


def _content_length(value):
    if not value or len(value) > 18 or not value.isdigit():
        raise ParseError(400, "invalid Content-Length")
    # bytes.isdigit is ASCII-only, so int() sees plain digits
    return int(value)


def _refuse_partial(buf, start, size):
    """Refuse an incomplete head at once when its bytes can never begin a valid request.

    A TLS record (first byte 0x16), a bare LF (RFC 9112 §2.2 lets a server refuse
    it; waiting for a CRLF that never comes would hold the connection until the
    head timeout) and a method with a byte that is not a token character.
    """
    if start >= size:
        return
    if buf[start] == 0x16:
        raise ParseError(400, TLS_ON_PLAIN_PORT)
    i = buf.find(b"\n", start, size)
    while i >= 0:
        if i == start or buf[i - 1] != 0x0D:
            raise ParseError(400, "bare LF in request head; lines must end with CRLF")
        i = buf.find(b"\n", i + 1, size)
    p = start
    while p < size and buf[p] in _TCHAR:
        p += 1
    if p < size and buf[p] != 0x20 and not (p == start and p == size - 1 and buf[p] == 0x0D):
        raise ParseError(400, "invalid method")


# over the complexity ceiling on purpose: one pass over the head, in parser_c's order
def parse_head(buf, start=0, max_head=MAX_HEAD, max_headers=MAX_HEADERS,  # noqa: C901
               max_target=MAX_TARGET):
    """Parse the request head found in ``buf[start:]``.

    Returns a :class:`RequestHead`, or ``None`` when the head is not complete
    yet. Raises :class:`ParseError` for anything RFC 9112 tells a server to
    reject, and for heads over the size limits.
    """
    size = len(buf)
    # RFC 9112 §2.2: ignore empty lines received before the request line; they
    # count against max_head (from ``origin``) so a CRLF flood cannot grow the
    # buffer without bound
    origin = start
    while buf[start:start + 2] == b"\r\n":
        start += 2
    end = buf.find(b"\r\n\r\n", start, origin + max_head)
    if end < 0:
        line_end = buf.find(b"\r\n", start, start + max_target + 32)
        if line_end < 0 and size - start > max_target + 32:
            raise ParseError(414, "request line too long")
        if size - origin >= max_head:
            raise ParseError(431, "request head too large")
        _refuse_partial(buf, start, size)
        return None

    lines = bytes(buf[start:end]).split(b"\r\n")
    line = lines[0]
    if len(line) > max_target + 32:
        raise ParseError(414, "request line too long")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise ParseError(400, "malformed request line")
    method, target, version = parts
    if not _is_token(method):
        raise ParseError(400, "invalid method")
    if len(target) > max_target:
        raise ParseError(414, "request target too long")
    if not target or any(c < 0x21 or c > 0x7E for c in target):
        raise ParseError(400, "invalid request target")
    minor = _parse_version(version)
    path, query = _split_target(method, target)

    if len(lines) - 1 > max_headers:
        raise ParseError(431, "too many header fields")
    fields = []
    content_length = -1
    te_values = None
    hosts = 0
    conn_tokens = b""
    expect = None
    content_type = accept = origin = request_id = platform_id = user_agent = None
    for line in lines[1:]:
        if b"\r" in line or b"\n" in line:
            raise ParseError(400, "bare CR or LF in request head")
        name, value = _split_field(line)
        if name == b"content-length":
            if content_length >= 0:
                raise ParseError(400, "duplicate Content-Length")
            content_length = _content_length(value)
        elif name == b"transfer-encoding":
            te_values = (te_values or []) + [value]
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            conn_tokens += b"," + value.lower()
        elif name == b"expect":
            expect = value.lower()
        elif name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"accept":
            accept = value.decode("latin-1") if accept is None else accept + "," + value.decode("latin-1")
        elif name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"x-request-id":
            if request_id is None:
                request_id = value.decode("latin-1")
        elif name == b"x-openbayes-serving-request-id":
            if platform_id is None:
                platform_id = value.decode("latin-1")
        elif name == b"user-agent":
            if user_agent is None:
                user_agent = value.decode("latin-1")
        fields.append((name.decode("latin-1"), value.decode("latin-1")))

    chunked = False
    if te_values is not None:
        if content_length >= 0:
            raise ParseError(400, "both Content-Length and Transfer-Encoding")
        if minor == 0:
            raise ParseError(400, "Transfer-Encoding in an HTTP/1.0 request")
        chunked = _transfer_codings(te_values)
    if minor == 1 and hosts != 1:
        raise ParseError(400, "an HTTP/1.1 request needs exactly one Host field")

    keep_alive = minor == 1
    if conn_tokens:
        tokens = [t.strip(b" \t") for t in conn_tokens.split(b",")]
        if b"close" in tokens:
            keep_alive = False
        elif b"keep-alive" in tokens:
            keep_alive = True
    expect_continue = False
    if expect is not None and minor == 1:
        if expect != b"100-continue":
            raise ParseError(417, "only the 100-continue expectation is supported")
        expect_continue = True

    head = RequestHead()
    head.method = method.decode("latin-1")
    head.target = target.decode("latin-1")
    head.path = path
    head.query = query
    head.version = minor
    head.fields = fields
    head.end = end + 4
    head.content_length = content_length
    head.chunked = chunked
    head.keep_alive = keep_alive
    head.expect_continue = expect_continue
    head.content_type = content_type
    head.accept = accept
    head.origin = origin
    head.request_id = request_id if request_id is not None else platform_id
    head.user_agent = user_agent
    return head


_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Incremental decoder of a chunked request body (RFC 9112 §7.1).

    ``feed(buf, pos)`` consumes what it can of ``buf[pos:]`` and returns the
    new position; ``done`` turns true after the last chunk and trailer section.
    Extensions are validated and ignored; trailer fields are validated and
    kept in ``trailers``. The decoded body grows past ``max_body`` → 413.
    """

    def __init__(self, max_body, max_trailer=MAX_HEAD, max_fields=MAX_HEADERS):
        self.max_body = max_body
        self.max_trailer = max_trailer
        self.max_fields = max_fields
        self.state = _SIZE
        self.remaining = 0
        self.size = 0
        self.trailer_bytes = 0
        self.parts = []
        self.trailers = []

    @property
    def done(self):
        return self.state == _DONE

    def body(self):
        """The decoded body so far, as bytes."""
        return b"".join(self.parts)

    def take(self):
        """The body bytes decoded since the last ``take`` (the decoder keeps none of them)."""
        parts = self.parts
        if not parts:
            return b""
        self.parts = []
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def feed(self, buf, pos=0):
        size = len(buf)
        while pos < size:
            state = self.state
            if state == _SIZE:
                eol = buf.find(b"\r\n", pos, pos + MAX_CHUNK_LINE)
                if eol < 0:
                    if size - pos >= MAX_CHUNK_LINE:
                        raise ParseError(400, "chunk size line too long")
                    return pos
                self._size_line(bytes(buf[pos:eol]))
                pos = eol + 2
            elif state == _DATA:
                take = min(self.remaining, size - pos)
                self.parts.append(bytes(buf[pos:pos + take]))
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = _DATA_END
            elif state == _DATA_END:
                if size - pos < 2:
                    if buf[pos] != 0x0D:
                        raise ParseError(400, "chunk data longer than its declared size")
                    return pos
                if buf[pos] != 0x0D or buf[pos + 1] != 0x0A:
                    raise ParseError(400, "chunk data longer than its declared size")
                pos += 2
                self.state = _SIZE
            elif state == _TRAILER:
                eol = buf.find(b"\r\n", pos, pos + self.max_trailer - self.trailer_bytes + 2)
                if eol < 0:
                    if size - pos >= self.max_trailer - self.trailer_bytes:
                        raise ParseError(431, "chunked trailer section too large")
                    return pos
                line = bytes(buf[pos:eol])
                self.trailer_bytes += eol + 2 - pos
                pos = eol + 2
                if not line:
                    self.state = _DONE
                    return pos
                if b"\r" in line or b"\n" in line:
                    raise ParseError(400, "bare CR or LF in chunked trailer")
                if len(self.trailers) >= self.max_fields:
                    raise ParseError(431, "too many trailer fields")
                name, value = _split_field(line)
                self.trailers.append((name.decode("latin-1"), value.decode("latin-1")))
            else:
                return pos
        return pos

    def _size_line(self, line):
        digits = 0
        while digits < len(line) and line[digits] in _HEX:
            digits += 1
        if digits == 0:
            raise ParseError(400, "invalid chunk size")
        if digits > 16:
            raise ParseError(400, "chunk size too large")
        if digits < len(line) and _CHUNK_EXT.fullmatch(line, digits) is None:
            raise ParseError(400, "invalid chunk extension")
        n = int(line[:digits], 16)
        if n == 0:
            self.state = _TRAILER
            return
        if self.size + n > self.max_body:
            raise ParseError(413, "request body too large")
        self.size += n
        self.remaining = n
        self.state = _DATA


_HEX_DIGITS = "0123456789ABCDEFabcdef"
_BYTE_OF_HEX = {(a + b).encode(): bytes.fromhex(a + b) for a in _HEX_DIGITS for b in _HEX_DIGITS}


def unquote_to_bytes(data):
    """Percent-decode bytes: ``%XX`` with two hex digits is a byte, anything else stays as it is."""
    pieces = data.split(b"%")
    if len(pieces) == 1:
        return data
    out = [pieces[0]]
    for piece in pieces[1:]:
        byte = _BYTE_OF_HEX.get(piece[:2])
        if byte is None:
            out.append(b"%" + piece)
        else:
            out.append(byte + piece[2:])
    return b"".join(out)


def parse_query(query):
    """``a=1&b=x+y&b=%E2%9C%93`` → ``[("a", "1"), ("b", "x y"), ("b", "✓")]``.

    Keys and values are percent-decoded as UTF-8 (bytes that are not UTF-8
    stay as ``%XX`` escapes, upper case), ``+`` means space, empty pieces are
    skipped, a piece without ``=`` has an empty value.
    """
    pairs = []
    if not query:
        return pairs
    for piece in query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        if "+" in key:
            key = key.replace("+", " ")
        if "+" in value:
            value = value.replace("+", " ")
        # the text is latin-1 (one char per byte): percent-decode those bytes, so
        # raw UTF-8 next to %XX escapes is not encoded twice
        if "%" in key:
            key = unquote_to_bytes(key.encode("latin-1")).decode("utf-8", QUERY_ERRORS)
        elif not key.isascii():
            key = key.encode("latin-1").decode("utf-8", QUERY_ERRORS)
        if "%" in value:
            value = unquote_to_bytes(value.encode("latin-1")).decode("utf-8", QUERY_ERRORS)
        elif not value.isascii():
            value = value.encode("latin-1").decode("utf-8", QUERY_ERRORS)
        pairs.append((key, value))
    return pairs


def unquote_path(path):
    """Percent-decode a latin-1 path as UTF-8 (what Flask shows as ``request.path``)."""
    if "%" not in path:
        return path if path.isascii() else path.encode("latin-1").decode("utf-8", "replace")
    return unquote_to_bytes(path.encode("latin-1")).decode("utf-8", "replace")

