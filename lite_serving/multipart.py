"""``multipart/form-data`` bodies (RFC 7578) → form fields and uploaded files.

lite_serving parses multipart itself rather than depend on python-multipart or
multipart: the body is already complete when a predictor asks for ``form`` or
``files`` (in memory, or spooled to a temporary file for large uploads), so a
parser needs nothing but ``find`` on bytes or an ``mmap`` — a few dozen lines
with no streaming state machine, no extra dependency, and file parts of a
spooled upload that stay on disk (read with ``os.pread``), never copied into
memory.
"""

import io
import mmap
import os
import shutil

from .errors import ServingError
from .request_view import MultiDict

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


class _SpoolRegion(io.RawIOBase):
    """A read-only window ``[start, end)`` of a spooled body file, read with ``os.pread``."""

    def __init__(self, fd, start, end):
        self._fd, self._start, self._end, self._pos = fd, start, end, start

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._pos)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: self._start, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}[whence]
        self._pos = min(max(self._start, base + offset), self._end)
        return self._pos - self._start

    def tell(self):
        return self._pos - self._start

    def close(self):
        if not self.closed and self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


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


def parse_multipart(body, boundary, spool=None, max_parts=MAX_PARTS, max_field=MAX_FIELD_SIZE):
    """Parse a complete body; ``spool`` (a file) holds it when ``body`` is empty.

    Returns ``(form, files)`` multi-dicts. Malformed input → ServingError 400,
    a field over ``max_field`` or more than ``max_parts`` parts → 413.
    """
    fd = None
    if spool is not None:
        spool.flush()
        fd = spool.fileno()
        size = os.fstat(fd).st_size
        data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if size else b""
    else:
        data = body
    files = MultiDict()
    try:
        return _parse(data, boundary, fd, max_parts, max_field, files)
    except BaseException:
        for _name, upload in files.items(multi=True):  # a refused form keeps no file open
            upload.close()
        raise
    finally:
        if isinstance(data, mmap.mmap):
            data.close()


def _parse(data, boundary, fd, max_parts, max_field, files):
    form = MultiDict()
    delim = b"--" + boundary
    start = data.find(delim)
    if start < 0:
        raise ServingError("malformed multipart body: the boundary never appears", 400)
    pos = start + len(delim)
    parts = 0
    sep = b"\r\n" + delim
    while True:
        if data[pos:pos + 2] == b"--":
            return form, files
        eol = data.find(b"\r\n", pos)
        if eol < 0 or data[pos:eol].strip(b" \t"):
            raise ServingError("malformed multipart body: bad boundary line", 400)
        head_start = eol + 2
        head_end = data.find(b"\r\n\r\n", head_start - 2, head_start + MAX_PART_HEAD)
        if head_end < 0:
            raise ServingError("malformed multipart body: a part's headers never end", 400)
        headers = _part_headers(data[head_start:head_end])
        content_start = head_end + 4
        content_end = data.find(sep, content_start)
        if content_end < 0:
            raise ServingError("malformed multipart body: the closing boundary is missing", 400)
        parts += 1
        if parts > max_parts:
            raise ServingError(f"more than {max_parts} parts in a multipart body "
                                  "(--max-form-parts)", 413)
        disposition, params = _header_params(headers.get("content-disposition", ""))
        if disposition != "form-data" or "name" not in params:
            raise ServingError("malformed multipart body: a part without "
                               "Content-Disposition: form-data; name=...", 400)
        name = params["name"]
        size = content_end - content_start
        if "filename" in params:
            if fd is not None:
                stream = io.BufferedReader(_SpoolRegion(os.dup(fd), content_start, content_end))
            else:
                stream = io.BytesIO(bytes(data[content_start:content_end]))
            files.add(name, FileStorage(stream, params["filename"], name,
                                        headers.get("content-type", "application/octet-stream"),
                                        headers, size))
        else:
            if size > max_field:
                raise ServingError(f"form field {name!r} is larger than {max_field} bytes "
                                  "(--max-form-field-size)", 413)
            charset = _header_params(headers.get("content-type", ""))[1].get("charset", "utf-8")
            try:
                value = bytes(data[content_start:content_end]).decode(charset, "replace")
            except (LookupError, UnicodeError):  # unknown, or no text codec ("idna", "undefined")
                value = bytes(data[content_start:content_end]).decode("utf-8", "replace")
            form.add(name, value)
        pos = content_end + len(sep)


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
