"""Budgets, as an attacker tests them: what a client can make the server hold, and for how long.

Every buffer has a bound (per request, per answer, per connection, in all) and
every resource an owner that releases it when the answer is written. The
server's own /proc/PID/status (RSS, anonymous memory, peak) and its open
descriptors are the evidence; the bounds are generous for noisy machines and
far below what an unbounded server reaches.
"""

import os
import socket
import threading
import time

import pytest

from support.servers import start, stop
from support.waits import wait_until
from support.wire import (
    Client,
    assert_serves,
    build,
    fetch_metrics,
    post_json,
    received_bytes,
    split_one,
    wait_received,
)

pytestmark = pytest.mark.slow   # memory ceilings over tens of MiB, one server each

MIB = 1024 * 1024

SOURCE = """
    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict(self, request):
            kind = request.args.get("kind", "length")
            if kind == "big":
                return b"\\x01" * int(request.args["n"])
            if kind == "json":
                return {"items": len(request.get_json())}
            if kind == "data":
                return {"length": len(request.get_data())}
            if kind == "form":  # file sizes read in pieces: the predictor holds little itself
                files = request.files.getlist("f")
                sizes = [sum(len(p) for p in iter(lambda: f.read(65536), b"")) for f in files]
                return {"files": sizes, "fields": len(request.form)}
            return {"length": len(request.data)}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def status(pid):
    """Fields of /proc/PID/status in KiB: VmRSS, RssAnon, VmHWM; and HeldAnon, the anonymous
    memory the kernel cannot take back: RssAnon less LazyFree (/proc/PID/smaps_rollup), the
    pages of the spare body buffers lent to the kernel (MADV_FREE) while they wait."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0])
    lazy = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("LazyFree:"):
                lazy = int(line.split()[1])
    out["HeldAnon"] = out["RssAnon"] - lazy
    return out


def open_descriptors(pid):
    """(count, targets) of the server's open file descriptors."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return len(targets), targets


class PeakSampler:
    """The highest ``key`` of /proc/PID/status seen while the ``with`` block runs (sampled)."""

    def __init__(self, pid, key="RssAnon"):
        self.pid, self.key = pid, key
        self.peak = self.start = status(pid)[key]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, status(self.pid)[self.key])
            except (OSError, KeyError):
                return
            time.sleep(0.002)   # the sampling interval: this measures, it waits for nothing

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth(self):
        return self.peak - self.start


def settle(pid, key="VmRSS", rounds=20):
    """The lowest reading of ``key`` over a short while (after answers, memory is given back)."""
    low = status(pid)[key]
    for _ in range(rounds):
        time.sleep(0.05)   # readings over a while: a measurement, not a wait for an event
        low = min(low, status(pid)[key])
    return low


@pytest.fixture(params=["compiled", "pure"])
def server(request, tmp_path):
    env = {"LITE_SERVING_PURE": "1"} if request.param == "pure" else None
    srv = start(tmp_path / request.param, SOURCE, "--spool-size", str(MIB),
                       "--body-timeout", "60", "--head-timeout", "60", env=env)
    yield srv
    stop(srv)


def head_for(length, target="/", content_type="application/octet-stream"):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (target.encode(), content_type.encode(), length))


# -- per request: memory follows the bytes that arrived --------------------------------------

def test_declared_huge_bodies_take_no_memory_until_their_bytes_arrive(server):
    pid = server.proc.pid
    assert_serves(server)
    before = settle(pid)
    socks = []
    try:
        since = received_bytes(server)
        for _ in range(10):
            s = socket.create_connection((server.host, server.port), timeout=10)
            s.sendall(head_for(100 * MIB) + b"x")   # 100 MiB declared, one byte sent
            socks.append(s)
        # probes and other clients are answered meanwhile, at once
        reply = Client(server).request(build("GET", "/healthz"))
        assert reply.status == 200
        wait_received(server, 10 * len(head_for(100 * MIB) + b"x"), since)
        grown = status(pid)["VmRSS"] - before
        assert grown < 32 * 1024, f"10 connections declaring 100 MiB grew RSS by {grown} KiB"
    finally:
        for s in socks:
            s.close()


def test_a_body_arriving_in_pieces_is_answered_whole(server):
    body = bytes(range(256)) * (3 * MIB // 256 + 7)
    with Client(server) as c:
        c.send(head_for(len(body), "/?kind=data"))
        for i in range(0, len(body), 65536):
            c.send(body[i:i + 65536])
        reply = c.read()
    assert reply.status == 200 and reply.body == b'{"length":%d}' % len(body), reply


# -- in all: the memory ceiling ----------------------------------------------------------

def test_bodies_over_the_memory_ceiling_are_refused_until_memory_is_released(tmp_path):
    srv = start(tmp_path / "ceiling", SOURCE, "--max-memory", str(48 * MIB),
                       "--max-body-size", str(30 * MIB))
    try:
        since = received_bytes(srv)
        first = socket.create_connection((srv.host, srv.port), timeout=10)
        first.sendall(head_for(30 * MIB, "/?kind=data") + b"a" * MIB)
        wait_received(srv, len(head_for(30 * MIB, "/?kind=data")) + MIB, since)
        with Client(srv) as c:   # 30 MiB more does not fit beside the first
            c.send(head_for(30 * MIB, "/?kind=data"))
            raw, how = c.read_to_close()
        reply, rest = split_one(raw)
        assert reply.status == 503, raw[:300]
        assert b"too many request bodies" in reply.body
        assert reply.header("connection") == "close"
        assert how in ("eof", "reset")
        # a small body still fits, probes still answer
        assert Client(srv).request(post_json(b'{"a": 1}', "/?kind=data")).status == 200
        first.sendall(b"a" * (29 * MIB))
        first.settimeout(20)
        reply = Client.__new__(Client)
        reply.sock, reply.buf, reply.received = first, b"", 0
        answer = reply.read()
        assert answer.status == 200 and answer.body == b'{"length":%d}' % (30 * MIB)
        first.close()
        # released: the same body is admitted now
        with Client(srv, timeout=30) as c:
            c.send(head_for(30 * MIB, "/?kind=data"))
            c.send(b"b" * (30 * MIB))
            assert c.read().status == 200
        assert fetch_metrics(srv).value("lite_serving_requests_in_flight") == 1  # the metrics one
    finally:
        stop(srv)


def test_memory_ceiling_below_the_body_limit_is_refused_at_start(tmp_path):
    srv = start(tmp_path / "bad", SOURCE, "--max-memory", "1000", wait=False)
    try:
        assert srv.proc.wait(20) != 0
    finally:
        stop(srv)
    assert "--max-memory (1000) must be at least --max-body-size" in srv.log


# -- per connection: answers a client does not read ------------------------------------------

def test_pipelined_requests_of_a_client_that_reads_nothing_stay_bounded(server):
    """The client pipelines thousands of requests for 128 KiB answers and reads nothing: the
    server stops framing them once its unsent answers pass the budget, stops reading, and
    loses none of the answers it owes."""
    pid = server.proc.pid
    assert_serves(server)
    before = settle(pid)
    request = post_json(b"{}", "/?kind=big&n=131072")
    s = socket.create_connection((server.host, server.port), timeout=10)
    s.setblocking(False)
    sent, deadline = 0, time.monotonic() + 3
    payload = request * 3000
    while sent < len(payload) and time.monotonic() < deadline:
        try:
            sent += s.send(payload[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)   # the client's pace while its buffers are full
    requests_sent = sent // len(request)
    # the server reads until its read-ahead and the unread answers stop it: no count of its own
    # marks that moment, so the measurement is taken after a while (and must hold whenever)
    time.sleep(0.5)
    grown = status(pid)["VmRSS"] - before
    assert grown < 48 * 1024, f"RSS grew by {grown} KiB for a client that reads nothing"
    assert Client(server).request(build("GET", "/healthz")).status == 200
    # now the client reads: every request it sent in full gets its answer, in order
    s.setblocking(True)
    s.settimeout(30)
    if sent % len(request):
        s.sendall(payload[sent:(requests_sent + 1) * len(request)])
        requests_sent += 1
    reader = Client.__new__(Client)
    reader.sock, reader.buf, reader.received = s, b"", 0
    for _ in range(requests_sent):
        reply = reader.read()
        assert reply.status == 200 and len(reply.body) == 131072
    s.close()


# -- every resource released when the answer is written ---------------------------------------

def multipart(boundary, parts):
    out = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        out.append(b"--%s\r\nContent-Disposition: %s\r\nContent-Type: application/octet-stream"
                   b"\r\n\r\n%s\r\n" % (boundary, disposition.encode(), data))
    out.append(b"--%s--\r\n" % boundary)
    return b"".join(out)


def test_spooled_uploads_leave_no_descriptor_or_file_behind(server):
    pid = server.proc.pid
    assert_serves(server)
    base_count, _ = open_descriptors(pid)
    upload = multipart(b"XyZ", [("f", "a.bin", b"a" * (8 * MIB)), ("f", "b.bin", b"b" * 1000),
                                ("field", None, b"v")])
    with Client(server, timeout=30) as c:
        for _ in range(12):
            reply = c.request(head_for(len(upload), "/?kind=form",
                                       "multipart/form-data; boundary=XyZ") + upload)
            assert reply.status == 200 and reply.body == b'{"files":[8388608,1000],"fields":1}'
        count, targets = open_descriptors(pid)
    deleted = [t for t in targets if "(deleted)" in t or "lite_serving-upload" in t]
    assert deleted == [], deleted
    assert count <= base_count + 1, (base_count, count, targets)   # + this client's socket


def test_large_bodies_read_by_the_facade_are_not_kept(server):
    pid = server.proc.pid
    item = b'"' + b"z" * 60 + b'",'
    body = b"[" + item * (40 * MIB // len(item)) + b'"end"]'
    with Client(server, timeout=60) as c:
        c.request(post_json(b'[1]', "/?kind=json"))
        before = settle(pid, "HeldAnon")
        for _ in range(3):
            reply = c.request(head_for(len(body), "/?kind=json", "application/json") + body)
            assert reply.status == 200
        after = settle(pid, "HeldAnon")
    # (the largest body buffer is kept for the next large body, its pages lent to the kernel)
    assert after - before < 48 * 1024, f"anonymous memory held grew by {after - before} KiB"


def test_chunked_form_over_spool_size_goes_to_disk(server):
    """Anonymous memory, sampled during the upload: the spooled file's pages (mapped while the
    form is parsed) are page cache, not memory the server holds."""
    pid = server.proc.pid
    assert_serves(server)
    upload = multipart(b"QwE", [("f", "big.bin", b"q" * (48 * MIB))])
    head = (b"POST /?kind=form HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=QwE\r\nTransfer-Encoding: chunked\r\n\r\n")
    with PeakSampler(pid) as anon, Client(server, timeout=60) as c:
        c.send(head)
        for i in range(0, len(upload), 256 * 1024):
            piece = upload[i:i + 256 * 1024]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        reply = c.request(b"0\r\n\r\n")
    assert reply.status == 200 and reply.body == b'{"files":[50331648],"fields":0}', reply
    assert anon.growth < 16 * 1024, f"a 48 MiB chunked form took {anon.growth} KiB of memory"


GATED = """
    import os
    import sys
    import time

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict(self, params):   # never touches the body: what is held is the server's
            print("PREDICT-START", params.get("tag"), file=sys.stderr, flush=True)
            while not os.path.exists(params["gate"]):
                time.sleep(0.01)
            return {"tag": params.get("tag")}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


@pytest.mark.parametrize("parser", ["compiled", "pure"])
def test_chunked_body_is_held_once_and_released_after_its_answer(tmp_path, parser):
    env = {"LITE_SERVING_PURE": "1"} if parser == "pure" else None
    srv = start(tmp_path / "srv", GATED, env=env)
    try:
        pid = srv.proc.pid
        assert_serves(srv)
        before = settle(pid, "HeldAnon")
        size = 64 * MIB
        gate = tmp_path / "gate"
        head = (b"POST /?gate=%s&tag=big HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                % str(gate).encode())
        piece = b"c" * (256 * 1024)
        with PeakSampler(pid) as anon, Client(srv, timeout=60) as c:
            c.send(head)
            for _ in range(size // len(piece)):
                c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            c.send(b"0\r\n\r\n")
            srv.wait_for("PREDICT-START big", timeout=60)
            time.sleep(0.2)   # memory given back settles: a measurement, it waits for no event
            held = status(pid)["HeldAnon"] - before
            gate.write_text("")
            reply = c.read()
        assert reply.status == 200 and reply.body == b'{"tag":"big"}', reply
        assert held < 1.4 * size // 1024, f"a 64 MiB chunked body is held in {held} KiB"
        assert anon.peak - before < 1.6 * size // 1024, (
            f"receiving a 64 MiB chunked body peaked at {anon.peak - before} KiB")
        after = settle(pid, "HeldAnon")   # the body's buffer kept for the next one, its pages
        assert after - before < 16 * 1024, f"{after - before} KiB stay held after the answer"
    finally:
        stop(srv)


def test_a_client_leaving_mid_body_releases_its_memory_and_budget(server):
    pid = server.proc.pid
    assert_serves(server)
    before = settle(pid)
    for _ in range(5):
        since = received_bytes(server)
        s = socket.create_connection((server.host, server.port), timeout=10)
        s.sendall(head_for(40 * MIB, "/?kind=data") + b"d" * (8 * MIB))
        wait_received(server, len(head_for(40 * MIB, "/?kind=data")) + 8 * MIB, since)
        s.close()
    wait_until(lambda: fetch_metrics(server).value("lite_serving_open_connections") <= 1,
               timeout=20, what="connections closed")
    assert fetch_metrics(server).value("lite_serving_requests_in_flight") == 1  # the metrics one
    after = settle(pid)
    assert after - before < 40 * 1024, f"RSS stays {after - before} KiB above the start"
    # the budget was given back too: 5 × 40 MiB reserved would leave too little for this
    with Client(server, timeout=60) as c:
        body = b"e" * (100 * MIB)
        c.send(head_for(len(body), "/?kind=data"))
        sender = threading.Thread(target=c.sock.sendall, args=(body,))
        sender.start()
        reply = c.read()
        sender.join()
    assert reply.status == 200 and reply.body == b'{"length":%d}' % len(body), reply
