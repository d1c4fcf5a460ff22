"""The wire as the production, hostile-input and load tests see it.

- a raw HTTP/1.1 reader that frames answers itself (:func:`split_responses`,
  :func:`read_response`, :func:`read_to_close`), so the tests see exactly what was sent;
- :func:`parse_metrics`: a small parser of the Prometheus text format; :func:`wait_in_flight` and
  :func:`wait_received` wait on the server's own counts (requests held, bytes read).
"""

import re
import socket
import time

from support.waits import wait_until

# A predictor answering {"length": len(body)}: the servers of the hostile-input tests.
LENGTH_ECHO = """
    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict(self, data):
            return {"length": len(data)}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


# -- requests -----------------------------------------------------------------

def build(method, target="/", headers=(), body=b"", host=True, version=b"HTTP/1.1"):
    """Request bytes; ``Content-Length`` is added for a non-empty body unless given."""
    lines = [b"%s %s %s" % (method.encode(), target.encode(), version)]
    names = {n.lower() for n, _ in headers}
    if host and "host" not in names:
        lines.append(b"Host: test")
    for name, value in headers:
        lines.append(b"%s: %s" % (name.encode(), value.encode() if isinstance(value, str) else value))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def post_json(obj_bytes, target="/", extra=()):
    return build("POST", target, [("Content-Type", "application/json"), *extra], obj_bytes)


class Reply:
    def __init__(self, status, headers, body, raw):
        self.status = status
        self.headers = headers      # [(lowercase name, value)]
        self.body = body
        self.raw = raw              # every byte of this answer

    def header(self, name, default=None):
        for n, v in self.headers:
            if n == name.lower():
                return v
        return default

    def __repr__(self):
        return f"<Reply {self.status} {self.headers!r} {self.body[:120]!r}>"


class Malformed(Exception):
    """The server sent bytes that are not an HTTP/1.1 response."""


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*")


def split_one(data, head_only=False):
    """(Reply, rest) for the first complete answer in ``data``, or (None, data) if incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None, data
    lines = data[:end].split(b"\r\n")
    m = STATUS_LINE.fullmatch(lines[0])
    if not m:
        raise Malformed(f"bad status line {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise Malformed(f"bad header line {line[:100]!r}")
        headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
    status = int(m.group(1))
    pos = end + 4
    names = dict(headers)
    if head_only or status in (100, 204, 304) or 100 <= status < 200:
        return Reply(status, headers, b"", data[:pos]), data[pos:]
    if "transfer-encoding" in names:
        body = bytearray()
        while True:
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return None, data
            size = int(data[pos:eol].split(b";")[0], 16)
            if size == 0:
                tail = data.find(b"\r\n\r\n", eol)
                if tail < 0:
                    if data[eol:eol + 4] == b"\r\n\r\n":
                        tail = eol
                    else:
                        return None, data
                pos = tail + 4
                return Reply(status, headers, bytes(body), data[:pos]), data[pos:]
            if len(data) < eol + 2 + size + 2:
                return None, data
            body += data[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    if "content-length" not in names:
        raise Malformed("answer without Content-Length or Transfer-Encoding")
    length = int(names["content-length"])
    if len(data) < pos + length:
        return None, data
    return Reply(status, headers, data[pos:pos + length], data[:pos + length]), data[pos + length:]


def split_responses(data):
    """Every complete answer in ``data``, and the bytes left after them."""
    replies = []
    while data:
        reply, rest = split_one(data)
        if reply is None:
            break
        replies.append(reply)
        data = rest
    return replies, data


class Client:
    """A blocking socket and the bytes received and not yet framed."""

    def __init__(self, server, timeout=15.0):
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        self.buf = b""
        self.received = 0   # bytes read from the socket

    def send(self, data):
        self.sock.sendall(data)

    def read(self, head_only=False):
        """The next answer; raises ConnectionError when the server closes first."""
        while True:
            reply, rest = split_one(self.buf, head_only)
            if reply is not None:
                self.buf = rest
                return reply
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError(f"closed before a complete answer; got {self.buf[:200]!r}")
            self.received += len(chunk)
            self.buf += chunk

    def request(self, data, head_only=False):
        self.send(data)
        return self.read(head_only)

    def read_to_close(self, timeout=15.0):
        """Everything until the server ends the connection: (bytes, how: "eof"/"reset"/"timeout")."""
        data, how = read_to_close(self.sock, timeout)
        data = self.buf + data
        self.buf = b""
        return data, how

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_to_close(sock, timeout=15.0):
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(262144)
        except socket.timeout:
            return b"".join(chunks), "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), "reset"
        if not chunk:
            return b"".join(chunks), "eof"
        chunks.append(chunk)


def fetch(server, data, head_only=False, timeout=15.0):
    """One request on a fresh connection; its answer."""
    with Client(server, timeout) as c:
        return c.request(data, head_only)


def get(server, target, head_only=False):
    return fetch(server, build("HEAD" if head_only else "GET", target), head_only)


def assert_serves(server):
    """A fresh connection still gets a 200 for ``GET /``."""
    reply = get(server, "/")
    assert reply.status == 200, reply
    return reply


# -- Prometheus text format ---------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+-?\d+)?")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\["\\n])*)"\s*(,|$)')
_COMMENT = re.compile(rf"# (HELP|TYPE) ({_NAME})(?: (.*))?")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class Metrics:
    """Parsed samples: ``value(name, **labels)`` sums the samples whose labels include those."""

    def __init__(self, samples, types, helps):
        self.samples = samples      # [(name, {label: value}, float)]
        self.types = types          # family -> type
        self.helps = helps

    def value(self, name, **labels):
        found = [v for n, ls, v in self.samples
                 if n == name and all(ls.get(k) == want for k, want in labels.items())]
        assert found, f"no sample {name} {labels}"
        return sum(found)

    def series(self, name):
        return [(ls, v) for n, ls, v in self.samples if n == name]


def _family(name, types):
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) in ("histogram", "summary"):
            return name[:-len(suffix)]
    return name


def parse_metrics(text):
    """Parse the exposition format strictly; AssertionError on any malformed line."""
    samples, types, helps = [], {}, {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for number, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            m = _COMMENT.fullmatch(line)
            if not m:
                assert not line.startswith(("# HELP", "# TYPE")), f"line {number}: {line!r}"
                continue
            kind, name, rest = m.groups()
            if kind == "TYPE":
                assert rest in _TYPES, f"line {number}: unknown type {rest!r}"
                assert name not in types, f"line {number}: second TYPE for {name}"
                assert not any(_family(n, types) == name for n, _, _ in samples), \
                    f"line {number}: TYPE after samples of {name}"
                types[name] = rest
            else:
                assert name not in helps, f"line {number}: second HELP for {name}"
                helps[name] = rest or ""
            continue
        m = _SAMPLE.fullmatch(line)
        assert m, f"line {number}: not a sample: {line!r}"
        name, label_text, raw_value = m.groups()
        labels = {}
        if label_text:
            pos = 0
            while pos < len(label_text):
                lm = _LABEL.match(label_text, pos)
                assert lm, f"line {number}: bad labels {label_text!r}"
                assert lm.group(1) not in labels, f"line {number}: label {lm.group(1)} twice"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        value = float(raw_value)  # also accepts NaN, +Inf, -Inf
        samples.append((name, labels, value))
    for name, _, _ in samples:
        family = _family(name, types)
        assert family in types, f"sample {name} without a TYPE line"
    return Metrics(samples, types, helps)


def check_histogram(metrics, family, **labels):
    """Buckets cumulative and ending in +Inf == _count; returns _count."""
    buckets = [(ls["le"], v) for ls, v in metrics.series(family + "_bucket")
               if all(ls.get(k) == w for k, w in labels.items())]
    assert buckets and buckets[-1][0] == "+Inf", buckets
    bounds = [float(le) for le, _ in buckets]
    assert bounds == sorted(bounds), bounds
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{family} buckets not cumulative: {counts}"
    count = metrics.value(family + "_count", **labels)
    assert counts[-1] == count
    assert metrics.value(family + "_sum", **labels) >= 0
    return count


def fetch_metrics(server):
    reply = get(server, "/metrics")
    assert reply.status == 200, reply
    assert reply.header("content-type", "").startswith("text/plain"), reply
    return parse_metrics(reply.body.decode("utf-8"))


SCRAPE = len(build("GET", "/metrics"))   # the bytes of one fetch_metrics request


def in_flight(server):
    """Requests the server has received whole and not yet answered (this scrape not counted)."""
    return fetch_metrics(server).value("lite_serving_requests_in_flight") - 1


def wait_in_flight(server, count):
    """Until the server holds ``count`` requests. A request counts once it is whole, and is handed
    on at the end of that turn of the loop: one more scrape, answered in a later turn, makes
    sure that turn has ended."""
    wait_until(lambda: in_flight(server) == count, what=f"{count} requests in flight")
    fetch_metrics(server)


def open_connections(server):
    """Client connections the server has open (this scrape's not counted)."""
    return fetch_metrics(server).value("lite_serving_open_connections") - 1


def received_bytes(server):
    """The server's count of bytes read from clients (this scrape included)."""
    return fetch_metrics(server).value("lite_serving_received_bytes_total")


def wait_received(server, count, since):
    """Until the server has read ``count`` more bytes from clients than when
    :func:`received_bytes` returned ``since`` (the scrapes made meanwhile not counted)."""
    scrapes = [0]

    def read_enough():
        scrapes[0] += 1
        return received_bytes(server) - since - scrapes[0] * SCRAPE >= count

    wait_until(read_enough, what=f"{count} bytes read by the server")


def rss_kib(pid, field="VmRSS"):
    """A memory figure of process ``pid`` from /proc/PID/status, in KiB: its resident set
    (``VmRSS``) unless ``field`` names another (``RssAnon``: its anonymous memory)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")
