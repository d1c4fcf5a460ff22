"""Streamed answers: a generator body sent chunked, piece by piece, on its own thread.

The predictor's generators coordinate with the test through files in the model directory (the
server's working directory): a generator waits (bounded) for ``TAG.release`` to appear, and
records what it did in ``TAG.finished`` / ``TAG.stopped`` / ``TAG.produced``.
"""

import hashlib
import os
import socket
import time

import pytest

from support.http_client import Connection, ConnectionClosed, request
from support.servers import module_server
from support.waits import wait_until

SOURCE = r'''
import hashlib
import os
import time

import lite_serving
import openbayes_serving as serv

try:
    import flask
except ImportError:
    flask = None


def released(tag, limit=30.0):
    """Wait (at most ``limit`` seconds) for the test to create TAG.release."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if os.path.exists(tag + ".release"):
            return True
        time.sleep(0.005)
    return False


def record(path, text):
    with open(path + ".tmp", "w") as out:
        out.write(text)
    os.replace(path + ".tmp", path)


def gated(tag):
    try:
        yield b"first piece\n"
        yield b"second piece\n" if released(tag) else b"never released\n"
        yield "third piece \u2713\n"
    finally:
        record(tag + ".finished", "yes")


def endless(tag):
    count = 0
    try:
        for count in range(1, 100_001):   # bounded: 100000 pieces, 10 ms apart
            yield b"tick %d\n" % count
            time.sleep(0.01)
    finally:
        record(tag + ".stopped", str(count))


def big(tag, total, size=65536):
    piece = bytes(range(256)) * (size // 256)
    produced = 0
    while produced < total:
        yield piece
        produced += len(piece)
        record(tag + ".produced", str(produced))


def failing():
    yield b"ok 1\n"
    yield b"ok 2\n"
    raise RuntimeError("the generator broke midway")


def lazy_body(tag, request):
    """Reads the request body only after predict has returned, once released."""
    yield b"waiting\n"
    released(tag)
    yield hashlib.sha256(request.get_data()).hexdigest().encode()


def odd_pieces():
    yield b"a"
    yield b""
    yield ""
    yield "b"


def int_piece():
    yield b"text before\n"
    yield 5          # not bytes or str: must not become five NUL bytes
    yield b"text after\n"


def flask_stream(tag):
    resp = flask.Response(gated(tag), status=201, mimetype="application/x-ndjson",
                          headers=[("X-Flask", "yes"), ("Cache-Control", "no-store")])
    resp.set_cookie("first", "1")
    resp.set_cookie("second", "2", httponly=True)
    return resp


EVENTS = [
    "hello",
    "two\nlines",
    {"event": "update", "id": 7, "data": {"a": 1, "b": [True, None]}},
    {"data": "with retry", "retry": 1500},
    {"event": "bare"},
    b"bytes data",
    "cr\rlf\r\nmixed",
]


class Predictor:
    def predict(self, args, request):
        kind = args.get("kind")
        tag = args.get("tag", "stream")
        if kind == "pieces":
            n = args.get("n", 3, type=int)
            return lite_serving.Response((f"piece {i};" for i in range(n)), mimetype="text/plain",
                                         headers={"X-Pieces": str(n)})
        if kind == "gated":
            return lite_serving.Response(gated(tag), mimetype="text/plain",
                                         headers={"X-Kind": "gated"})
        if kind == "endless":
            return lite_serving.Response(endless(tag), mimetype="text/plain")
        if kind == "big":
            return lite_serving.Response(big(tag, args.get("total", 0, type=int)),
                                         mimetype="application/octet-stream")
        if kind == "failing":
            return lite_serving.Response(failing(), mimetype="text/plain")
        if kind == "flask":
            return flask_stream(tag)
        if kind == "lazy":
            return lite_serving.Response(lazy_body(tag, request), mimetype="text/plain")
        if kind == "odd":
            return lite_serving.Response(odd_pieces(), mimetype="text/plain")
        if kind == "int":
            return lite_serving.Response(int_piece(), mimetype="text/plain")
        if kind == "ignore":   # leaves the body unread
            return {"n": args.get("n")}
        if kind == "sse":
            return serv.event_stream(iter(EVENTS))
        return {"n": args.get("n"), "kind": kind, "size": len(request.get_data())}


if __name__ == "__main__":
    serv.run(Predictor)
'''

HTTP11 = b"POST /?%s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


server = module_server("streaming", SOURCE)


def path_of(server, name):
    return os.path.join(str(server.directory), name)


def wait_for_file(path, limit=30.0):
    """The file's text once it exists (bounded wait), else None."""
    try:
        wait_until(lambda: os.path.exists(path), limit, what=f"{path} written")
    except AssertionError:
        return None
    with open(path) as f:
        return f.read()


def read_head(conn):
    """The response head of a stream (status, headers), leaving the body unread."""
    resp = conn.read_response(head=True)
    return resp


def read_chunk(conn):
    """One chunk's data; None for the terminal chunk (its trailers are consumed)."""
    size_line = conn._read_until(b"\r\n")
    size = int(size_line.split(b";", 1)[0].strip(), 16)
    if size == 0:
        while conn._read_until(b"\r\n"):
            pass
        return None
    data = conn._read_exact(size)
    assert conn._read_exact(2) == b"\r\n", "chunk data not followed by CRLF"
    return data


def read_all_chunks(conn, limit=100_000):
    chunks = []
    for _ in range(limit):
        chunk = read_chunk(conn)
        if chunk is None:
            return chunks
        chunks.append(chunk)
    raise AssertionError("too many chunks")


def assert_streamed_head(resp, status=200):
    assert resp.status == status, resp
    assert resp.header("transfer-encoding", "").lower() == "chunked", resp.headers
    assert not resp.has_header("content-length"), resp.headers


def test_generator_body_is_chunked_piece_by_piece(server):
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % b"kind=pieces&n=5")
        resp = read_head(conn)
        assert_streamed_head(resp)
        assert resp.header("content-type") == "text/plain; charset=utf-8"
        assert resp.header("x-pieces") == "5"
        assert read_all_chunks(conn) == [b"piece %d;" % i for i in range(5)]
        conn.send(HTTP11 % b"kind=echo&n=after")  # the connection stays usable
        assert conn.read_response().json() == {"n": "after", "kind": "echo", "size": 0}


def test_first_piece_arrives_before_the_generator_finishes(server):
    tag = "first-piece"
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % f"kind=gated&tag={tag}".encode())
        resp = read_head(conn)
        assert_streamed_head(resp)
        assert resp.header("x-kind") == "gated"
        assert read_chunk(conn) == b"first piece\n"
        # the generator is waiting for the release file: it has not finished
        assert not os.path.exists(path_of(server, tag + ".finished"))
        open(path_of(server, tag + ".release"), "w").close()
        assert read_all_chunks(conn) == [b"second piece\n", "third piece \u2713\n".encode()]
    assert wait_for_file(path_of(server, tag + ".finished")) == "yes"


@pytest.mark.parametrize("threads", ["1", "0"])
def test_other_connections_are_answered_while_a_stream_waits(serve, threads):
    srv = serve(SOURCE, "--threads", threads)
    tag = "waiting"
    with Connection(srv.host, srv.port) as conn:
        conn.send(HTTP11 % f"kind=gated&tag={tag}".encode())
        assert_streamed_head(read_head(conn))
        assert read_chunk(conn) == b"first piece\n"
        for n in range(3):
            answer = request(srv, "POST", f"/?kind=echo&n={n}", [("Content-Length", "0")])
            assert (answer.status, answer.json()) == (200, {"n": str(n), "kind": "echo", "size": 0})
            assert request(srv, "GET", "/").status == 200
        assert not os.path.exists(path_of(srv, tag + ".finished"))
        open(path_of(srv, tag + ".release"), "w").close()
        assert read_all_chunks(conn)[0] == b"second piece\n"


def test_client_leaving_mid_stream_stops_the_generator(server):
    tag = "leaver"
    conn = Connection(server.host, server.port)
    try:
        conn.send(HTTP11 % f"kind=endless&tag={tag}".encode())
        assert_streamed_head(read_head(conn))
        assert read_chunk(conn) == b"tick 1\n"
        assert read_chunk(conn) == b"tick 2\n"
    finally:
        conn.close()
    stopped = wait_for_file(path_of(server, tag + ".stopped"))
    assert stopped is not None, "the generator's finally never ran after the client left"
    assert int(stopped) < 100_000, "the generator ran to its end"
    assert request(server, "GET", "/").status == 200


def produced(server, tag):
    try:
        with open(path_of(server, tag + ".produced")) as f:
            return int(f.read() or 0)
    except FileNotFoundError:
        return 0


def test_slow_reader_holds_the_generator_back(server):
    tag = "slow"
    total = 50 * 1024 * 1024
    bound = 16 * 1024 * 1024
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(30)
    sock.connect((server.host, server.port))
    try:
        sock.sendall(HTTP11 % f"kind=big&tag={tag}&total={total}".encode())
        raw = b""
        for _ in range(1000):
            raw += sock.recv(65536)
            if b"\r\n\r\n" in raw:
                break
        head, _, raw = raw.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        consumed = len(raw)
        gaps = []
        for step in range(200):          # slowly: 64 KiB at a time, up to ~12 MiB
            time.sleep(0.01)             # a slow reader: the behaviour under test
            consumed += len(sock.recv(65536))
            if step % 20 == 0:
                gaps.append(produced(server, tag) - consumed)
        time.sleep(1.0)                  # time enough to run far ahead, were nothing holding it
        gaps.append(produced(server, tag) - consumed)
        assert max(gaps) < bound, f"produced - read reached {max(gaps)} bytes: {gaps}"
        assert produced(server, tag) < total
        rest = bytearray()
        for _ in range(100_000):         # now read everything
            data = sock.recv(1 << 20)
            if not data:
                break
            rest += data
            if rest.endswith(b"\r\n0\r\n\r\n"):
                break
    finally:
        sock.close()
    assert produced(server, tag) == total
    assert consumed + len(rest) > total


def test_streamed_flask_response_is_honoured(server):
    pytest.importorskip("flask")
    tag = "flask"
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % f"kind=flask&tag={tag}".encode())
        resp = read_head(conn)
        assert_streamed_head(resp, status=201)
        assert resp.header("content-type") == "application/x-ndjson"
        assert resp.header("x-flask") == "yes"
        assert resp.header("cache-control") == "no-store"
        cookies = resp.header_list("set-cookie")
        assert len(cookies) == 2, resp.headers
        assert cookies[0].startswith("first=1") and cookies[1].startswith("second=2")
        assert "HttpOnly" in cookies[1]
        assert read_chunk(conn) == b"first piece\n"
        assert not os.path.exists(path_of(server, tag + ".finished"))
        open(path_of(server, tag + ".release"), "w").close()
        assert read_all_chunks(conn) == [b"second piece\n", "third piece \u2713\n".encode()]
    assert wait_for_file(path_of(server, tag + ".finished")) == "yes"


def test_event_stream_format(server):
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % b"kind=sse")
        resp = read_head(conn)
        assert_streamed_head(resp)
        assert resp.media_type() == "text/event-stream"
        assert resp.header("cache-control") == "no-cache"
        events = [chunk.decode() for chunk in read_all_chunks(conn)]
    assert events == [
        "data: hello\n\n",
        "data: two\ndata: lines\n\n",
        'event: update\nid: 7\ndata: {"a":1,"b":[true,null]}\n\n',
        "retry: 1500\ndata: with retry\n\n",
        "event: bare\ndata: \n\n",
        "data: bytes data\n\n",
        "data: cr\ndata: lf\ndata: mixed\n\n",   # CR, CRLF and LF all end an SSE line
    ]


def test_http10_client_gets_the_stream_unframed_until_close(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST /?kind=pieces&n=4 HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        resp = conn.read_response()   # no Content-Length, not chunked: read to close
        assert resp.status == 200, resp
        assert not resp.has_header("transfer-encoding")
        assert not resp.has_header("content-length")
        assert resp.header("connection", "").lower() == "close"
        assert resp.body == b"piece 0;piece 1;piece 2;piece 3;"
        assert conn.closed_by_peer()


def test_generator_failing_midway_cuts_the_chunked_body(server):
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % b"kind=failing")
        assert_streamed_head(read_head(conn))
        got = []
        with pytest.raises(ConnectionClosed):
            for _ in range(10):
                chunk = read_chunk(conn)
                assert chunk is not None, "a terminal chunk ended a failed stream"
                got.append(chunk)
        assert got == [b"ok 1\n", b"ok 2\n"]
    server.wait_for("the streamed answer failed")
    answer = request(server, "POST", "/?kind=echo&n=9", [("Content-Length", "0")])
    assert (answer.status, answer.json()) == (200, {"n": "9", "kind": "echo", "size": 0})


def test_pipelined_requests_behind_a_stream_come_after_it_in_order(server):
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % b"kind=pieces&n=3" + HTTP11 % b"kind=echo&n=1"
                  + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + HTTP11 % b"kind=pieces&n=2"
                  + HTTP11 % b"kind=echo&n=2")
        first, echo1, root, second, echo2 = conn.read_responses(5)
    assert_streamed_head(first)
    assert first.body == b"piece 0;piece 1;piece 2;"
    assert echo1.json() == {"n": "1", "kind": "echo", "size": 0}
    assert root.status == 200 and "message" in root.json()
    assert_streamed_head(second)
    assert second.body == b"piece 0;piece 1;"
    assert echo2.json() == {"n": "2", "kind": "echo", "size": 0}


def test_pipelined_requests_wait_for_a_gated_stream(server):
    tag = "pipelined-gate"
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % f"kind=gated&tag={tag}".encode() + HTTP11 % b"kind=echo&n=behind")
        assert_streamed_head(read_head(conn))
        assert read_chunk(conn) == b"first piece\n"
        open(path_of(server, tag + ".release"), "w").close()
        assert read_all_chunks(conn) == [b"second piece\n", "third piece \u2713\n".encode()]
        assert conn.read_response().json() == {"n": "behind", "kind": "echo", "size": 0}


def test_empty_pieces_are_skipped_not_sent_as_the_last_chunk(server):
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % b"kind=odd")
        assert_streamed_head(read_head(conn))
        assert read_all_chunks(conn) == [b"a", b"b"]


def test_stream_to_a_closing_client_ends_with_the_connection(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST /?kind=pieces&n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Origin: http://example.test\r\nContent-Length: 0\r\n\r\n")
        resp = read_head(conn)
        assert_streamed_head(resp)
        assert resp.header("access-control-allow-origin") == "http://example.test"
        assert read_all_chunks(conn) == [b"piece 0;", b"piece 1;"]
        assert conn.closed_by_peer()


def test_generator_reading_the_request_after_predict_returned(server):
    """The body stays the request's own while its stream runs, whatever other requests arrive."""
    tag = "lazy"
    body = hashlib.sha256(b"lazy").digest() * (3 * 1024 * 1024 // 32)   # 3 MiB: a large body
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST /?kind=lazy&tag=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % (tag.encode(), len(body)) + body)
        assert_streamed_head(read_head(conn))
        assert read_chunk(conn) == b"waiting\n"
        for i in range(4):  # other large bodies, the same size, on other connections
            other = bytes([i]) * len(body)
            answer = request(server, "POST", f"/?kind=ignore&n={i}", [], other)
            assert answer.json() == {"n": str(i)}
        open(path_of(server, tag + ".release"), "w").close()
        assert read_all_chunks(conn) == [hashlib.sha256(body).hexdigest().encode()]


def test_generator_yielding_a_non_text_piece_fails_the_stream(server):
    """``yield 5`` is a bug in the predictor: the stream is cut, not padded with 5 NUL bytes."""
    with Connection(server.host, server.port) as conn:
        conn.send(HTTP11 % b"kind=int")
        assert_streamed_head(read_head(conn))
        got = []
        try:
            for _ in range(10):
                chunk = read_chunk(conn)
                if chunk is None:
                    break
                got.append(chunk)
        except ConnectionClosed:
            pass
    assert b"\x00" * 5 not in got, f"an int piece was sent as NUL bytes: {got}"
    assert got == [b"text before\n"]


STALL_SOURCE = """
    import lite_serving

    class Predictor:
        def predict(self, json):
            marker = json["marker"]
            def pieces():
                try:
                    for _ in range(100000):
                        yield b"x" * 65536
                finally:
                    with open(marker, "w") as f:
                        f.write("closed")
            return lite_serving.Response(pieces(), mimetype="application/octet-stream")
"""


def test_stream_to_a_client_that_stops_reading_is_ended_by_the_body_timeout(serve, tmp_path):
    import json as jsonlib
    import socket
    server = serve(STALL_SOURCE, "--body-timeout", "1")
    marker = tmp_path / "closed"
    body = jsonlib.dumps({"marker": str(marker)}).encode()
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    sock.recv(1024)  # the stream has begun; from now on nothing is read
    try:
        wait_until(marker.exists, 30, what="the stalled stream's generator closed")
    except AssertionError:
        pass   # said below, once the socket is closed
    sock.close()
    assert marker.exists(), "the generator of a stalled stream was never closed"
