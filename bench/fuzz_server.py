"""Fuzz the server's byte-level entry point: random and mutated request bytes through a
real ``lite_serving.server.listener.Server`` loop, without the network; and the answers a
predictor returns (statuses, header names and values, bodies, streams), fuzzed too.

The harness builds a :class:`~lite_serving.app.routes.Application` around a small predictor
(through ``load_predictor``, as ``serve_one`` does) and runs ``Server.serve_forever`` on
a thread. Its listener is an in-process stand-in whose ``accept()`` hands over one end
of a ``socket.socketpair()``; the harness keeps the other end, writes the input to it in
pieces (each piece waits until the server has read the previous one), then half-closes
it (or drops it) and reads what the server sends back.

Per input it checks:

- no exception escapes the loop (the loop thread is still alive) and nothing in
  lite_serving logs an error other than the predictor's own intentional failures;
- the connection ends: answered and closed, or closed, within a few seconds;
- what came back is a sequence of well-formed HTTP/1.1 answers with nothing after them:
  final statuses 200-599 (interim answers only ``100 Continue``), header names that are
  tokens and values without control characters, no body after 204/304 — whatever the
  fuzzed predictor returned (``POST /?resp=1`` turns the body's bytes into a status,
  headers, a media type and a body or stream);
- the server forgets the connection, its requests-in-flight gauge returns to 0 and its
  memory budget holds nothing.

Engines: ``atheris`` (coverage-guided, if ``import atheris`` works) or ``random`` (a
seed corpus and a structure-aware mutator). Usage::

    python bench/fuzz_server.py --runs 20000             # engine: atheris when installed
    python bench/fuzz_server.py --engine random --seconds 120 --pure
"""

import argparse
import collections
import fcntl
import importlib
import logging
import os
import random
import re
import socket
import struct
import sys
import tempfile
import termios
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# -- the seed corpus ---------------------------------------------------------------

H = b"Host: fuzz\r\n"
SEEDS = [
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"HEAD / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /healthz HTTP/1.1\r\n" + H + b"\r\nGET /readyz HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /metrics HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    b"OPTIONS / HTTP/1.1\r\n" + H + b"Origin: http://a\r\nAccess-Control-Request-Headers: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"GET http://fuzz/?a=1&b=%E2%9C%93 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b'Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{"values": 1}',
    b"POST /?echo=1 HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
    b'Transfer-Encoding: chunked\r\n\r\n4;ext=v\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\nX-T: t\r\n\r\n',
    b"POST / HTTP/1.1\r\n" + H + b"Content-Type: application/msgpack\r\nContent-Length: 4\r\n\r\n"
    b"\x81\xa1a\x01",
    b"POST /?raise=1 HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /?refuse=1 HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /?stream=3 HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n[]",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Type: multipart/form-data; boundary=XX\r\n"
    b'Content-Length: 97\r\n\r\n--XX\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
    b"\r\nhello\r\n--XX--\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    b"POST / HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: 1\r\n\r\n1",
    b"POST /v2/models/m/infer HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"DELETE / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",
    # fuzzed answers (see fuzzed_answer): status, header count, (name length, name, value
    # length, value) for each, then the kind and the body
    *(b"POST /?resp=1 HTTP/1.1\r\n" + H + b"Content-Type: application/octet-stream\r\n"
      b"Content-Length: %d\r\n\r\n%s" % (len(spec), spec) for spec in (
          b"\x00\xc8\x02\x05X-One\x03a\r\n\x04X-Tw\x05b\x00c\r\n\x00body-bytes!",
          b"\x00\xcc\x01\x0eContent-Length\x012\x00ignored",
          b"\x00\x64\x00\x04streamed",
          b"\x01\x30\x00\x02text/html\r\nX: 1\x00",
          b"\x01\x2f\x01\x02A \x01v\x03refused",
          b"\x00\xcd\x00\x01image/png")),
]

TOKENS = [
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"=",
    b'"',
    b"Content-Length: ",
    b"Content-Length: 0\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"-1",
    b"+1",
    b"0x10",
    b"Host: x\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"HTTP/1.0",
    b"HTTP/1.1",
    b"HTTP/2.0",
    b"GET / HTTP/1.1\r\n",
    b"POST / HTTP/1.1\r\n",
    b"\xff",
    b"%",
    b"%00",
    b"?",
    b"#",
    b"*",
    b"\x7f",
    b"Origin: null\r\n",
    b"Accept: application/msgpack;q=0.5, */*;q=0\r\n",
    b"Content-Type: application/json\r\n",
]


# -- one server, driven in process ----------------------------------------------------


class PairListener:
    """Stands in for a listening socket: ``accept()`` returns server ends of socketpairs."""

    def __init__(self):
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._pending = collections.deque()
        self.family = socket.AF_UNIX
        self._count = 0

    def fileno(self):
        return self._signal_r.fileno()

    def setblocking(self, flag):
        pass

    def offer(self, server_end):
        self._count += 1
        self._pending.append((server_end, ("fuzz", self._count)))
        self._signal_w.send(b"\0")

    def accept(self):
        if not self._pending:
            try:
                while self._signal_r.recv(4096):
                    pass
            except BlockingIOError:
                pass
            raise BlockingIOError
        return self._pending.popleft()

    def close(self):
        self._signal_r.close()
        self._signal_w.close()


class FuzzPredictor:
    def __init__(self):
        pass

    def predict(self, payload, params, headers):
        import lite_serving

        if "resp" in params:
            return fuzzed_answer(bytes(payload) if isinstance(payload, (bytes, bytearray)) else b"")
        if "raise" in params:
            raise RuntimeError("intentional failure")
        if "refuse" in params:
            raise lite_serving.ServingError("refused", status_code=422, payload={"x": 1})
        if "stream" in params:
            n = min(int(params.get("stream", "1") or 1) if params.get("stream", "").isdigit() else 1, 5)
            return lite_serving.Response((b"piece %d;" % i for i in range(n)))
        if "bytes" in params:
            return bytes(payload) if isinstance(payload, (bytes, bytearray)) else b"x"
        return {
            "type": type(payload).__name__,
            "params": len(list(params)),
            "headers": len(list(headers.items())),
        }


def fuzzed_answer(raw):
    """Bytes → what a predictor may return: a Response (headers, mimetype or content type), a
    streamed Response, a ServingError, with any status and any header bytes."""
    import lite_serving

    status = int.from_bytes(raw[0:2].ljust(2, b"\0"), "big") % 1000
    count = raw[2] % 4 if len(raw) > 2 else 0
    pos, headers = 3, []
    for _ in range(count):
        if pos >= len(raw):
            break
        n = raw[pos] % 24
        name = raw[pos + 1:pos + 1 + n].decode("latin-1")
        pos += 1 + n
        m = raw[pos] % 32 if pos < len(raw) else 0
        value = raw[pos + 1:pos + 1 + m].decode("latin-1")
        pos += 1 + m
        headers.append((name, value))
    rest = raw[pos:]
    kind = rest[0] % 5 if rest else 0
    body = rest[1:]
    if kind == 0:
        return lite_serving.Response(body, status=status, headers=headers)
    if kind == 1:
        return lite_serving.Response(body, status=status, mimetype=body[:16].decode("latin-1") or None)
    if kind == 2:
        return lite_serving.Response(body, status=status, content_type=body[:24].decode("latin-1"))
    if kind == 3:
        raise lite_serving.ServingError(body[:32].decode("latin-1"), status_code=status)
    return lite_serving.Response((body[i:i + 3] for i in range(0, len(body), 3)), status=status,
                                 headers=headers)


class ErrorCounter(logging.Handler):
    """Errors lite_serving logs, except the predictor's intentional failures."""

    # the predictor's own failures, and answers the wire gate refused (the fuzzed predictor's)
    EXPECTED = re.compile(r"predict raised RuntimeError|answer to \S+ \S+ not sent: ")

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        message = record.getMessage()
        if not self.EXPECTED.match(message):
            text = message
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.records.append(text)


class Harness:
    def __init__(self, threads):
        from lite_serving.app.routes import Application
        from lite_serving.predictor.loader import load_predictor
        from lite_serving.process.config import Config
        from lite_serving.server.listener import Server

        self.errors = ErrorCounter()
        logger = logging.getLogger("lite_serving")
        logger.addHandler(self.errors)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self.config = Config(
            threads=threads,
            max_body_size=1 << 20,
            spool_size=4096,
            head_timeout=2,
            body_timeout=2,
            keep_alive_timeout=2,
            access_log=False,
        )
        self.app = Application(self.config)
        self.app.caller = load_predictor(FuzzPredictor, self.config).caller
        self.app.ready = True
        self.listener = PairListener()
        self.server = Server(self.app, self.config, [self.listener])
        self.escaped = []
        self.in_flight_base = 0
        self.thread = threading.Thread(target=self._loop, name="fuzz-io", daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            self.server.serve_forever()
        except BaseException as exc:  # what must never happen
            self.escaped.append("".join(traceback.format_exception(exc)))

    def alive(self):
        return self.thread.is_alive()

    def stop(self):
        self.server.request_stop()
        self.thread.join(10)
        self.server.close()
        logging.getLogger("lite_serving").removeHandler(self.errors)


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*")
FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def frame_answers(data):  # noqa: C901 -- one pass over the framing rules, in their order
    """Split ``data`` into answers; returns (statuses, problem or None).

    An answer with a Content-Length whose body is absent because the next answer starts
    right after its head is taken as the answer to a HEAD request.
    """
    statuses = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return statuses, f"incomplete answer head at {pos}: {data[pos:pos + 80]!r}"
        lines = data[pos:end].split(b"\r\n")
        m = STATUS_LINE.fullmatch(lines[0])
        if not m:
            return statuses, f"bad status line {lines[0][:80]!r}"
        fields = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or FIELD_NAME.fullmatch(name) is None or FIELD_VALUE.fullmatch(value) is None:
                return statuses, f"bad header line {line[:80]!r}"
            if name.lower() in fields and name.lower() in (b"content-length", b"transfer-encoding"):
                return statuses, f"repeated framing field {name!r}"
            fields[name.lower()] = value.strip()
        status = int(m.group(1))
        statuses.append(status)
        pos = end + 4
        if status < 200:
            if data[end - len(lines[0]):end + 4] != b"HTTP/1.1 100 Continue\r\n\r\n":
                return statuses, f"interim answer other than 100 Continue: {data[pos - 80:pos]!r}"
            continue
        if status > 599:
            return statuses, f"final status {status} outside 200-599"
        if status in (204, 304):
            if b"content-length" in fields and status == 204:
                return statuses, "Content-Length on a 204"
            continue
        if fields.get(b"transfer-encoding") == b"chunked":
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return statuses, "incomplete chunked answer"
                size = int(data[pos:eol], 16)
                pos = eol + 2 + size + 2
                if size == 0:
                    break
            if pos > len(data):
                return statuses, "incomplete chunked answer"
            continue
        if b"content-length" not in fields:
            if fields.get(b"connection") == b"close":
                return statuses, None  # body runs to the end of the connection
            return statuses, "answer without framing"
        length = int(fields[b"content-length"])
        if data.startswith(b"HTTP/1.", pos) or (pos == len(data) and length):
            continue  # the answer to a HEAD request
        if pos + length > len(data):
            return statuses, "incomplete answer body"
        pos += length
    return statuses, None


class Finding(Exception):
    pass


def run_one(h, data, cuts, mode):  # noqa: C901 -- every invariant checked, in one place
    """Feed one input; raise Finding on a broken invariant."""
    client, server_end = socket.socketpair()
    client.settimeout(5)
    h.listener.offer(server_end)
    h.server.wake()
    try:
        start = 0
        for cut in list(cuts) + [len(data)]:
            if cut <= start:
                continue
            try:
                client.sendall(data[start:cut])
            except OSError:
                break  # the server closed its end already
            start = cut
            # wait until the server has taken the piece (or stopped reading)
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                try:
                    pending = struct.unpack("i", fcntl.ioctl(server_end, termios.FIONREAD,
                                                             b"\0\0\0\0"))[0]
                except (OSError, ValueError):
                    break
                if pending == 0:
                    break
                time.sleep(0)
        if mode == "drop":
            client.close()
            received = None
        else:
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            chunks = []
            deadline = time.monotonic() + 8
            how = None
            while time.monotonic() < deadline:
                try:
                    chunk = client.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    how = "reset"
                    break
                if not chunk:
                    how = "eof"
                    break
                chunks.append(chunk)
            received = b"".join(chunks)
            if how is None:
                raise Finding(f"connection neither answered nor closed in 8 s; got {received[:200]!r}")
    finally:
        client.close()
    if not h.alive():
        raise Finding("exception escaped the server loop:\n" + "\n".join(h.escaped))
    if received is not None:
        statuses, problem = frame_answers(received)
        if problem:
            raise Finding(f"malformed answer stream ({problem}); statuses {statuses}; got {received[:300]!r}")
    deadline = time.monotonic() + 5
    while True:
        held = [conn for conn in list(h.server.connections.values())
                if conn.transport is not None and conn.transport.sock is server_end]
        if not held:
            break
        if time.monotonic() > deadline:
            raise Finding(f"the server still holds the connection 5 s after the client left ({held[0]!r})")
        time.sleep(0.001)
    deadline = time.monotonic() + 2
    while h.app.metrics.in_flight != h.in_flight_base:
        if time.monotonic() > deadline:
            leaked = h.app.metrics.in_flight - h.in_flight_base
            h.in_flight_base = h.app.metrics.in_flight  # report each leak once
            raise Finding(f"requests_in_flight off by {leaked} once the client is gone")
        time.sleep(0.001)
    deadline = time.monotonic() + 2
    while h.server.budget.held != 0:
        if time.monotonic() > deadline:
            held, h.server.budget.held = h.server.budget.held, 0  # report each leak once
            raise Finding(f"the memory budget still counts {held} bytes once the client is gone")
        time.sleep(0.001)
    if h.errors.records:
        records, h.errors.records[:] = list(h.errors.records), []
        raise Finding("lite_serving logged an error:\n" + "\n".join(records))


# -- input shaping ---------------------------------------------------------------------


def decode_input(raw):
    """Fuzzer bytes → (request bytes, cut offsets, mode). Byte 0: mode and piece count;
    bytes 1-2: piece size."""
    if len(raw) < 3:
        return raw, [], "shut"
    flags, size = raw[0], struct.unpack(">H", raw[1:3])[0]
    data = raw[3:]
    mode = "drop" if flags & 0x80 and flags & 0x40 else "shut"
    pieces = flags & 0x0F
    cuts = []
    if pieces and data:
        step = max(1, size % max(1, len(data)))
        cuts = [min(len(data), step * (i + 1)) for i in range(pieces)]
    return data, cuts, mode


def encode_input(data, cuts_count, step, drop):
    flags = (cuts_count & 0x0F) | (0xC0 if drop else 0)
    return bytes([flags]) + struct.pack(">H", step & 0xFFFF) + data


class Mutator:
    def __init__(self, seed):
        self.rng = random.Random(seed)

    def mutate(self, data):
        r = self.rng
        data = bytearray(data)
        for _ in range(r.randint(1, 6)):
            op = r.randrange(9)
            pos = r.randint(0, len(data))
            if op == 0 and data:  # flip a bit
                i = r.randrange(len(data))
                data[i] ^= 1 << r.randrange(8)
            elif op == 1:  # insert a token
                data[pos:pos] = r.choice(TOKENS)
            elif op == 2 and data:  # delete a slice
                data[pos : pos + r.randint(1, 16)] = b""
            elif op == 3 and data:  # duplicate a slice
                a = r.randrange(len(data))
                data[pos:pos] = data[a : a + r.randint(1, 64)]
            elif op == 4:  # splice another seed
                other = r.choice(SEEDS)
                a = r.randrange(len(other))
                data[pos:pos] = other[a : a + r.randint(1, len(other))]
            elif op == 5 and data:  # random byte
                data[r.randrange(len(data))] = r.randrange(256)
            elif op == 6:  # numbers in odd forms
                data[pos:pos] = r.choice(
                    [b"0", b"00", b"7", b"18446744073709551616", b"-0", b"1e3", b"0x", b"FFFFFFFF", b"9" * 30]
                )
            elif op == 7 and data:  # replace a line end
                i = data.find(b"\r\n", r.randrange(len(data)))
                if i >= 0:
                    data[i : i + 2] = r.choice([b"\n", b"\r", b"\r\r\n", b"\r\n ", b"", b"\r\n\r\n"])
            elif op == 8:  # append another request
                data += r.choice(SEEDS)
        return bytes(data[:8192])

    def next_input(self):
        r = self.rng
        base = r.choice(SEEDS)
        data = base if r.random() < 0.05 else self.mutate(base)
        return encode_input(data, r.choice([0, 0, 1, 2, 3, 7, 15]), r.randint(1, 200), r.random() < 0.1)


# -- drivers ---------------------------------------------------------------------------


class Stats:
    def __init__(self, crash_dir, every=5.0):
        self.count = 0
        self.findings = 0
        self.kinds = collections.Counter()
        self.started = time.monotonic()
        self.last = self.started
        self.every = every
        self.crash_dir = crash_dir

    def record(self, raw, finding):
        self.findings += 1
        kind = re.sub(r"\d+", "N", str(finding).split("\n", 1)[0][:100])
        self.kinds[kind] += 1
        if self.kinds[kind] <= 3:
            os.makedirs(self.crash_dir, exist_ok=True)
            path = os.path.join(self.crash_dir, f"finding-{self.findings:05d}.bin")
            with open(path, "wb") as f:
                f.write(raw)
            with open(path + ".txt", "w") as f:
                f.write(str(finding))
            print(f"FINDING {self.findings}: {str(finding)[:2000]}\n  input saved in {path}", flush=True)

    def tick(self, force=False):
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            rate = self.count / max(now - self.started, 1e-9)
            print(
                f"[fuzz] {self.count} inputs, {rate:.0f}/s, {self.findings} findings "
                f"({len(self.kinds)} kinds), {now - self.started:.0f}s",
                flush=True,
            )

    def summary(self):
        self.tick(force=True)
        for kind, n in self.kinds.most_common():
            print(f"  {n:6d} x {kind}")


def fuzz_one(state, raw):
    h = state["harness"]
    data, cuts, mode = decode_input(raw)
    try:
        run_one(h, data, cuts, mode)
    except Finding as exc:
        state["stats"].record(raw, exc)
        if not h.alive():  # a fresh server for the rest of the run
            h.stop()
            state["harness"] = Harness(state["threads"])
    state["stats"].count += 1
    state["stats"].tick()


def run_random(state, runs, seconds, seed):
    mutator = Mutator(seed)
    end = time.monotonic() + seconds if seconds else None
    for seed_input in SEEDS:
        fuzz_one(state, encode_input(seed_input, 0, 1, False))
        fuzz_one(state, encode_input(seed_input, 15, 1, False))  # byte by byte
    while (runs is None or state["stats"].count < runs) and (end is None or time.monotonic() < end):
        fuzz_one(state, mutator.next_input())


def run_atheris(atheris, state, runs, seconds, extra):
    corpus = tempfile.mkdtemp(prefix="lite_serving-fuzz-corpus-")
    for i, seed_input in enumerate(SEEDS):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(encode_input(seed_input, 0, 1, False))
        with open(os.path.join(corpus, f"seed{i}-bytes"), "wb") as f:
            f.write(encode_input(seed_input, 15, 1, False))
    limit = {"runs": runs, "end": time.monotonic() + seconds if seconds else None}

    def test_one_input(raw):
        fuzz_one(state, raw)
        done = (limit["runs"] is not None and state["stats"].count >= limit["runs"]) or (
            limit["end"] is not None and time.monotonic() >= limit["end"]
        )
        if done:
            state["stats"].summary()
            sys.stdout.flush()
            os._exit(1 if state["stats"].findings else 0)

    args = [sys.argv[0], "-max_len=4096", "-timeout=30", "-rss_limit_mb=4096", *extra, corpus]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="inputs to try (default: no limit)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument(
        "--threads", type=int, default=0, help="predict threads of the server (0: inline, deterministic)"
    )
    parser.add_argument("--pure", action="store_true", help="use the pure-Python parser")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random engine")
    parser.add_argument(
        "--crash-dir", default=os.path.join(tempfile.gettempdir(), "lite_serving-fuzz-findings")
    )
    parser.add_argument("libfuzzer_args", nargs="*", help="extra libFuzzer flags (atheris)")
    options = parser.parse_args()
    if options.runs is None and options.seconds is None:
        options.runs = 10000
    os.environ["LITE_SERVING_PURE"] = "1" if options.pure else "0"
    sys.path.insert(0, ROOT)

    atheris = None
    if options.engine in ("auto", "atheris"):
        try:
            import atheris
        except ImportError:
            if options.engine == "atheris":
                parser.error("atheris is not installed (pip install atheris)")
    if atheris is not None:
        with atheris.instrument_imports(include=["lite_serving"]):
            for name in ("server", "loop", "transport", "connection", "dispatch", "request_body",
                         "app", "parser", "parser_py", "multipart", "request_view",
                         "body_decoder", "encoder", "response", "stream"):
                importlib.import_module("lite_serving." + name)
    import lite_serving.http.parser as chosen

    print(
        f"[fuzz] engine {'atheris' if atheris else 'random'}, parser {chosen.PARSER_NAME}, "
        f"predict threads {options.threads}, findings in {options.crash_dir}",
        flush=True,
    )

    state = {"threads": options.threads, "stats": Stats(options.crash_dir)}
    state["harness"] = Harness(options.threads)
    if atheris is not None:
        run_atheris(atheris, state, options.runs, options.seconds, options.libfuzzer_args)
    else:
        run_random(state, options.runs, options.seconds, options.seed)
    state["stats"].summary()
    state["harness"].stop()
    return 1 if state["stats"].findings else 0


if __name__ == "__main__":
    sys.exit(main())
