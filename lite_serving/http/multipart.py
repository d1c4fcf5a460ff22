"""``multipart/form-data`` bodies (RFC 7578) → form fields and uploaded files.

lite_serving parses multipart itself rather than depend on python-multipart or
multipart: :class:`MultipartParser` is a push parser (bytes in, events out, no
I/O of its own) that the connection feeds as a large upload arrives, each file
part going to a temporary file of its own as it streams
(:class:`~lite_serving.server.request_body.MultipartSink`), so that an upload is read
once and never held in memory; a small body, complete in memory, is fed to it
in one piece (:func:`parse_multipart`).
"""

import io
import os
import shutil

from lite_serving.errors import ServingError
from lite_serving.predictor.request_view import MultiDict

MAX_PARTS = 1000
MAX_FIELD_SIZE = 1024 * 1024       # a non-file field larger than this → 413
MAX_PART_HEAD = 16 * 1024


def boundary_of(params):
    """The boundary parameter of a multipart Content-Type, validated (RFC 2046 §5.1.1)."""
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise ServingError("multipart/form-data needs a boundary parameter of 1 to 70 characters", 400)
    return boundary.encode("ascii")


def _header_params(value):
    """``form-data; name="a"; filename="b.txt"`` → ``("form-data", {"name": "a", "filename": "b.txt"})``."""
    main, _, rest = value.partition(";")
    params = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t;":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            # browsers send '"' as %22 and a backslash as itself; \" and \\ are read as
            # escapes (werkzeug's rule), any other backslash stays: C:\dir\a.txt keeps its path
            i += 1
            out = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n and rest[i + 1] in '"\\':
                    i += 1
                out.append(rest[i])
                i += 1
            val = "".join(out).replace("%22", '"')
            i += 1
        else:
            end = rest.find(";", i)
            end = n if end < 0 else end
            val = rest[i:end].strip()
            i = end
        params[key] = val
    if "filename*" in params:  # RFC 5987: charset'lang'percent-encoded; preferred (RFC 6266)
        charset, _, encoded = params["filename*"].partition("'")
        _, _, encoded = encoded.partition("'")
        from urllib.parse import unquote
        try:
            params["filename"] = unquote(encoded, encoding=charset or "utf-8", errors="replace")
        except (LookupError, UnicodeError):  # an unknown charset: still a file, named as UTF-8
            params["filename"] = unquote(encoded, encoding="utf-8", errors="replace")
    return main.strip().lower(), params


class FileStorage:
    """One uploaded file, like werkzeug's: ``filename``, ``name``, ``content_type``, ``read()``, ``save()``."""

    def __init__(self, stream, filename, name, content_type, headers, size):
        self.stream = stream
        self.filename = filename
        self.name = name
        self.content_type = content_type
        self.headers = headers
        self.content_length = size

    @property
    def mimetype(self):
        return (self.content_type or "").split(";", 1)[0].strip().lower()

    @property
    def mimetype_params(self):
        return _header_params(self.content_type or "")[1]

    def read(self, size=-1):
        return self.stream.read(size)

    def save(self, dst, buffer_size=16384):
        """Write the file to a path or a binary file object."""
        self.stream.seek(0)
        if isinstance(dst, (str, os.PathLike)):
            with open(dst, "wb") as out:
                shutil.copyfileobj(self.stream, out, buffer_size)
        else:
            shutil.copyfileobj(self.stream, dst, buffer_size)

    def close(self):
        self.stream.close()

    def __getattr__(self, name):
        # like werkzeug's: what FileStorage lacks (seek, tell, readline, ...) is the stream's
        if name == "stream":
            raise AttributeError(name)
        return getattr(self.stream, name)

    def __iter__(self):
        return iter(self.stream)

    def __bool__(self):
        return bool(self.filename)

    def __repr__(self):
        return f"<FileStorage {self.filename!r} ({self.content_type!r})>"


PREAMBLE, AFTER_DELIMITER, HEADERS, FILE, FIELD, EPILOGUE = range(6)


class MultipartParser:
    """A push parser of ``multipart/form-data`` (RFC 7578, RFC 2046 §5.1): bytes go in as they
    arrive (:meth:`feed`), events come out to a handler, :meth:`close` at the end of the body.

    The handler's methods, called in body order:

    - ``literal(data)``: bytes that are not a file part's content (the preamble, delimiters,
      part headers, field values, the epilogue); with the file contents, every byte fed is
      handed on exactly once, in order, so the handler can keep the raw body if it wants;
    - ``file_begin(name, filename, content_type, headers)``, ``file_data(data)`` (any number of
      times), ``file_end()``;
    - ``field(name, value)``: a non-file part, decoded by its charset.

    Content is searched for the delimiter with ``bytes.find`` over what arrived, carrying a
    delimiter's length of tail from one piece to the next; nothing is searched twice beyond
    that tail. Malformed input raises ServingError (400; 413 for a field over ``max_field``
    or more than ``max_parts`` parts): :meth:`unconsumed` then gives the bytes fed and not yet
    handed on.
    """

    def __init__(self, boundary, handler, max_parts=MAX_PARTS, max_field=MAX_FIELD_SIZE):
        self.handler = handler
        self.delimiter = b"--" + boundary
        self.separator = b"\r\n--" + boundary   # ends a part's content
        self.max_parts = max_parts
        self.max_field = max_field
        self.state = PREAMBLE
        self.held = b""          # bytes fed and not yet handed on
        self.parts = 0
        self.field_name = None
        self.field_value = None
        self.field_charset = None

    def feed(self, data):
        """Parse the next bytes of the body."""
        held = self.held + data if self.held else data if type(data) is bytes else bytes(data)
        self.held = held
        pos = 0
        end = len(held)
        handler = self.handler
        try:
            while pos < end:
                state = self.state
                if state == FILE or state == FIELD:
                    found = held.find(self.separator, pos)
                    keep = found if found >= 0 else max(pos, end - len(self.separator) + 1)
                    if keep > pos:
                        self._content(memoryview(held)[pos:keep])
                        pos = keep
                    if found < 0:
                        break
                    self._part_end()
                    handler.literal(self.separator)
                    pos += len(self.separator)
                    self.state = AFTER_DELIMITER
                elif state == PREAMBLE:
                    found = held.find(self.delimiter, pos)
                    if found < 0:
                        keep = max(pos, end - len(self.delimiter) + 1)
                        handler.literal(held[pos:keep])
                        pos = keep
                        break
                    handler.literal(held[pos:found + len(self.delimiter)])
                    pos = found + len(self.delimiter)
                    self.state = AFTER_DELIMITER
                elif state == AFTER_DELIMITER:
                    if end - pos < 2:
                        break
                    if held[pos:pos + 2] == b"--":
                        handler.literal(held[pos:pos + 2])
                        pos += 2
                        self.state = EPILOGUE
                        continue
                    eol = held.find(b"\r\n", pos, pos + MAX_PART_HEAD)
                    if eol < 0:
                        if end - pos >= MAX_PART_HEAD:
                            self._malformed("bad boundary line")
                        break
                    if held[pos:eol].strip(b" \t"):
                        self._malformed("bad boundary line")
                    handler.literal(held[pos:eol + 2])
                    pos = eol + 2
                    self.state = HEADERS
                elif state == HEADERS:
                    if end - pos < 2:
                        break
                    if held[pos:pos + 2] == b"\r\n":   # no header lines at all
                        head_end = pos
                    else:
                        head_end = held.find(b"\r\n\r\n", pos, pos + MAX_PART_HEAD)
                        if head_end < 0:
                            if end - pos >= MAX_PART_HEAD:
                                self._malformed("a part's headers never end")
                            break
                        head_end += 2
                    content_start = head_end + 2
                    part = self._part_head(held[pos:head_end])   # raises before handing on
                    handler.literal(held[pos:content_start])
                    pos = content_start
                    self._part_begin(*part)
                else:  # EPILOGUE: ignored, handed on as it is
                    handler.literal(held[pos:end])
                    pos = end
        except ServingError:
            self.held = held[pos:]   # nothing from pos on was handed on
            raise
        self.held = held[pos:] if pos < end else b""

    def close(self):
        """The body has ended: ServingError unless it ended after the closing delimiter."""
        state = self.state
        if state == EPILOGUE:
            return
        why = {PREAMBLE: "the boundary never appears", AFTER_DELIMITER: "bad boundary line",
               HEADERS: "a part's headers never end"}.get(state, "the closing boundary is missing")
        raise ServingError(f"malformed multipart body: {why}", 400)

    def unconsumed(self):
        """The bytes fed and not handed on yet (after an error: the rest of the body so far)."""
        return self.held

    def _malformed(self, why):
        raise ServingError(f"malformed multipart body: {why}", 400)

    def _part_head(self, block):
        """(name, params, headers) of a part's header block, or ServingError."""
        headers = _part_headers(block)
        self.parts += 1
        if self.parts > self.max_parts:
            raise ServingError(f"more than {self.max_parts} parts in a multipart body "
                               "(--max-form-parts)", 413)
        disposition, params = _header_params(headers.get("content-disposition", ""))
        if disposition != "form-data" or "name" not in params:
            raise ServingError("malformed multipart body: a part without "
                               "Content-Disposition: form-data; name=...", 400)
        return params["name"], params, headers

    def _part_begin(self, name, params, headers):
        if "filename" in params:
            self.handler.file_begin(name, params["filename"],
                                    headers.get("content-type", "application/octet-stream"), headers)
            self.state = FILE
        else:
            self.field_name = name
            self.field_value = bytearray()
            self.field_charset = _header_params(headers.get("content-type", ""))[1].get("charset",
                                                                                       "utf-8")
            self.state = FIELD

    def _content(self, data):
        if self.state == FILE:
            self.handler.file_data(data)
            return
        value = self.field_value
        if len(value) + len(data) > self.max_field:
            raise ServingError(f"form field {self.field_name!r} is larger than {self.max_field} "
                               "bytes (--max-form-field-size)", 413)
        value += data
        self.handler.literal(bytes(data))

    def _part_end(self):
        if self.state == FILE:
            self.handler.file_end()
            return
        raw = bytes(self.field_value)
        try:
            value = raw.decode(self.field_charset, "replace")
        except (LookupError, UnicodeError):  # unknown, or no text codec ("idna", "undefined")
            value = raw.decode("utf-8", "replace")
        self.field_value = None
        self.handler.field(self.field_name, value)


class _PartsInMemory:
    """A parser handler for a body held in memory: fields and files (BytesIO) as multi-dicts."""

    def __init__(self):
        self.form = MultiDict()
        self.files = MultiDict()
        self.pieces = None

    def literal(self, data):
        pass

    def field(self, name, value):
        self.form.add(name, value)

    def file_begin(self, name, filename, content_type, headers):
        self.pieces = (name, filename, content_type, headers, [])

    def file_data(self, data):
        self.pieces[4].append(bytes(data))

    def file_end(self):
        name, filename, content_type, headers, pieces = self.pieces
        content = b"".join(pieces)
        self.files.add(name, FileStorage(io.BytesIO(content), filename, name, content_type,
                                         headers, len(content)))
        self.pieces = None


def parse_multipart(body, boundary, max_parts=MAX_PARTS, max_field=MAX_FIELD_SIZE):
    """Parse a complete body held in memory into ``(form, files)`` multi-dicts.

    Malformed input → ServingError 400; a field over ``max_field`` or more than
    ``max_parts`` parts → 413.
    """
    handler = _PartsInMemory()
    parser = MultipartParser(boundary, handler, max_parts, max_field)
    parser.feed(body)
    parser.close()
    return handler.form, handler.files


def _part_headers(block):
    headers = {}
    for line in bytes(block).split(b"\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise ServingError("malformed multipart body: a part header without a colon", 400)
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", "replace")
    return headers
