"""A small raw-socket HTTP/1.1 client for the behaviour tests.

The tests need to see exactly what the server sends, so this client does
nothing clever: it writes the bytes it is given and frames answers itself
(Content-Length, chunked, or read-to-close), one at a time, from a buffer
kept per connection so several pipelined answers can be read from one socket.

    with Connection(host, port) as conn:
        conn.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        resp = conn.read_response()
        resp.status, resp.header("content-type"), resp.body, resp.json()
"""

import json as _json
import socket

import msgpack

CRLF = b"\r\n"


class Response:
    """One parsed HTTP response."""

    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version          # "HTTP/1.1"
        self.status = status            # int
        self.reason = reason            # str
        self.headers = headers          # [(name, value)] in arrival order, names as sent
        self.body = body                # bytes
        self.raw_head = raw_head        # the head bytes, status line to blank line

    def header(self, name, default=None):
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        key = name.lower()
        for n, v in self.headers:
            if n.lower() == key:
                return v
        return default

    def header_list(self, name):
        """Every value of header ``name`` (case-insensitive), in order."""
        key = name.lower()
        return [v for n, v in self.headers if n.lower() == key]

    def has_header(self, name):
        return any(n.lower() == name.lower() for n, _ in self.headers)

    def media_type(self):
        """The Content-Type without parameters, lowercase ("" when absent)."""
        value = self.header("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    def json(self):
        return _json.loads(self.body)

    def msgpack(self):
        return msgpack.unpackb(self.body, raw=False)

    def text(self):
        return self.body.decode("utf-8")

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:200]!r}>"


class ConnectionClosed(Exception):
    """The server closed the connection before a complete response arrived."""


class Connection:
    """A client socket plus the bytes received and not yet consumed."""

    def __init__(self, host, port, timeout=10.0, family=None):
        if family is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        self.buf = b""
        self.host = host
        self.port = port

    # -- sending ---------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, target="/", headers=None, body=b"", version="HTTP/1.1",
                content_length=True):
        """Send one request; ``headers`` is a list of pairs or a dict."""
        self.send(build_request(method, target, headers, body, version, content_length))

    # -- receiving -------------------------------------------------------
    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed(f"connection closed; unconsumed bytes: {self.buf[:300]!r}")
        self.buf += chunk

    def _read_until(self, marker):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                data, self.buf = self.buf[:i], self.buf[i + len(marker):]
                return data
            self._fill()

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _read_to_close(self):
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                data, self.buf = self.buf, b""
                return data
            self.buf += chunk

    def read_response(self, head=False, skip_interim=False):
        """Read one response. ``head=True``: it answers a HEAD request (no body).

        1xx interim answers are returned as responses of their own unless
        ``skip_interim`` is set.
        """
        while True:
            raw_head = self._read_until(CRLF + CRLF)
            lines = raw_head.split(CRLF)
            status_line = lines[0].decode("latin-1")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise AssertionError(f"bad status line {status_line!r}")
            version, status = parts[0], int(parts[1])
            reason = parts[2] if len(parts) > 2 else ""
            headers = []
            for line in lines[1:]:
                name, sep, value = line.decode("latin-1").partition(":")
                if not sep:
                    raise AssertionError(f"bad header line {line!r}")
                headers.append((name, value.strip(" \t")))
            resp = Response(version, status, reason, headers, b"", raw_head + CRLF + CRLF)
            if 100 <= status < 200:
                if skip_interim:
                    continue
                return resp
            if head or status in (204, 304):
                return resp
            te = (resp.header("transfer-encoding") or "").lower()
            length = resp.header("content-length")
            if "chunked" in te:
                resp.body = self._read_chunked()
            elif length is not None:
                resp.body = self._read_exact(int(length))
            else:
                resp.body = self._read_to_close()
            return resp

    def _read_chunked(self):
        body = b""
        while True:
            size_line = self._read_until(CRLF)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self._read_until(CRLF):  # trailers, then the blank line
                    pass
                return body
            body += self._read_exact(size)
            if self._read_exact(2) != CRLF:
                raise AssertionError("chunk not followed by CRLF")

    def read_responses(self, count, heads=()):
        """``count`` pipelined responses; ``heads``: indexes of those answering HEAD."""
        return [self.read_response(head=i in heads) for i in range(count)]

    def closed_by_peer(self, timeout=5.0):
        """True when the server has closed: recv gives b"" (or a reset) with nothing pending."""
        if self.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)
        if data:
            self.buf += data
            return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_request(method, target="/", headers=None, body=b"", version="HTTP/1.1",
                  content_length=True):
    """The bytes of a request. Adds ``Host`` unless given, and ``Content-Length``
    for a non-empty body unless given (or ``content_length=False``)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {n.lower() for n, _ in pairs}
    if "host" not in names:
        pairs.insert(0, ("Host", "test"))
    if (content_length and body and "content-length" not in names
            and "transfer-encoding" not in names):
        pairs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n".encode("latin-1")
    for name, value in pairs:
        head += f"{name}: {value}\r\n".encode("latin-1") if isinstance(value, str) \
            else name.encode("latin-1") + b": " + value + CRLF
    return head + CRLF + body


def request(server_or_host, method="GET", target="/", headers=None, body=b"", port=None,
            timeout=10.0, version="HTTP/1.1"):
    """One request on a fresh connection; returns the final (non-1xx) response."""
    if port is None:
        host, port = server_or_host.host, server_or_host.port
    else:
        host = server_or_host
    family = socket.AF_INET6 if ":" in host else None
    with Connection(host, port, timeout, family=family) as conn:
        conn.request(method, target, headers, body, version)
        return conn.read_response(head=method == "HEAD", skip_interim=True)


def post(server, body=b"", content_type=None, target="/", headers=None, **kw):
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if content_type is not None:
        pairs.append(("Content-Type", content_type))
    return request(server, "POST", target, pairs, body, **kw)


def post_json(server, obj, target="/", headers=None, **kw):
    return post(server, _json.dumps(obj).encode(), "application/json", target, headers, **kw)


def chunked(*pieces, extensions=None, trailers=()):
    """A chunked body from ``pieces``; ``extensions[i]`` is appended to chunk i's size line."""
    out = b""
    for i, piece in enumerate(pieces):
        ext = (extensions or {}).get(i, b"") if isinstance(extensions, dict) else b""
        out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
    out += b"0\r\n"
    for name, value in trailers:
        out += f"{name}: {value}\r\n".encode("latin-1")
    return out + CRLF
