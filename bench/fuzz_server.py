"""Fuzz the server's byte-level entry point: random and mutated request bytes through a
real ``lite_serving.server.Server`` loop, without the network.

The harness builds a :class:`~lite_serving.app.Application` around a small predictor
(through ``load_predictor``, as ``serve_one`` does) and runs ``Server.serve_forever`` on
a thread. Its listener is an in-process stand-in whose ``accept()`` hands over one end
of a ``socket.socketpair()``; the harness keeps the other end, writes the input to it in
pieces (each piece waits until the server has read the previous one), then half-closes
it (or drops it) and reads what the server sends back.

Per input it checks:

- no exception escapes the loop (the loop thread is still alive) and nothing in
  lite_serving logs an error other than the predictor's own intentional failures;
- the connection ends: answered and closed, or closed, within a few seconds;
- what came back is a sequence of well-formed HTTP/1.1 answers with nothing after them;
- the server forgets the connection and its requests-in-flight gauge returns to 0.

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


class ErrorCounter(logging.Handler):
    """Errors lite_serving logs, except the predictor's intentional failures."""

    EXPECTED = ("predict raised RuntimeError",)

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        message = record.getMessage()
        if not message.startswith(self.EXPECTED):
            text = message
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.records.append(text)


class Harness:
    def __init__(self, threads):
        from lite_serving.app import Application
        from lite_serving.config import Config
        from lite_serving.executor import PredictPool
        from lite_serving.loader import load_predictor
        from lite_serving.server import Server

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
        )
        self.app = Application(self.config)
        self.app.caller = load_predictor(FuzzPredictor, self.config).caller
        self.app.ready = True
        self.listener = PairListener()
        self.server = Server(self.app, self.config, [self.listener])
        self.pool = PredictPool(self.app.handle_predict, threads, self.server.wake)
        self.escaped = []
        self.in_flight_base = 0
        self.thread = threading.Thread(target=self._loop, name="fuzz-io", daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            self.server.serve_forever(self.pool)
        except BaseException as exc:  # what must never happen
            self.escaped.append("".join(traceback.format_exception(exc)))

    def alive(self):
        return self.thread.is_alive()

    def stop(self):
        self.server.request_stop()
        self.thread.join(10)
        self.pool.stop()
        logging.getLogger("lite_serving").removeHandler(self.errors)


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*")


def frame_answers(data):
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
            if not sep or not name or name != name.strip() or b"\n" in line or b"\r" in line:
                return statuses, f"bad header line {line[:80]!r}"
            fields[name.lower()] = value.strip()
        status = int(m.group(1))
        statuses.append(status)
        pos = end + 4
        if status < 200 or status in (204, 304):
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


def run_one(h, data, cuts, mode):
    """Feed one input; raise Finding on a broken invariant."""
    client, server_end = socket.socketpair()
    fd = server_end.fileno()
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
    while fd in h.server.conns and h.server.conns[fd].sock is server_end:
        if time.monotonic() > deadline:
            conn = h.server.conns.get(fd)
            raise Finding(
                f"the server still holds the connection 5 s after the client left "
                f"(state {getattr(conn, 'state', '?')}, busy {getattr(conn, 'busy', '?')})"
            )
        time.sleep(0.001)
    deadline = time.monotonic() + 2
    while h.app.metrics.in_flight != h.in_flight_base:
        if time.monotonic() > deadline:
            leaked = h.app.metrics.in_flight - h.in_flight_base
            h.in_flight_base = h.app.metrics.in_flight  # report each leak once
            raise Finding(f"requests_in_flight off by {leaked} once the client is gone")
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
            for name in ("server", "app", "parser", "parser_py", "multipart", "request_view",
                         "body_decoder", "encoder", "response", "stream"):
                importlib.import_module("lite_serving." + name)
    import lite_serving.parser as chosen

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
