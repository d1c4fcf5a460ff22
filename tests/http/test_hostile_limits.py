"""Hostile clients against the limits and timeouts: each is refused with the right status,
its connection ends, and the server goes on serving."""

import socket
import time

import pytest

from support.servers import module_server, start, stop
from support.waits import wait_until
from support.wire import LENGTH_ECHO, Client, assert_serves, build, post_json, read_to_close, split_responses

ECHO = LENGTH_ECHO

SMALL = {"head": 1024, "headers": 10, "target": 256, "body": 1000}
DEFAULT = {"head": 65536, "headers": 100, "target": 8192, "body": 104857600}


@pytest.fixture(scope="module", params=["small", "default"])
def limited(request, tmp_path_factory):
    if request.param == "small":
        flags = ["--max-head-size", "1024", "--max-headers", "10", "--max-target", "256",
                 "--max-body-size", "1000"]
        limits = SMALL
    else:
        flags, limits = [], DEFAULT
    server = start(tmp_path_factory.mktemp(f"limits-{request.param}"), ECHO, *flags)
    yield server, limits
    stop(server)


def refused_once(server, data, status, shut=False):
    """Send ``data``: exactly one answer of ``status``, then the server ends the connection."""
    with Client(server) as c:
        c.send(data)
        if shut:
            c.sock.shutdown(socket.SHUT_WR)
        raw, how = c.read_to_close()
    replies, rest = split_responses(raw)
    assert [r.status for r in replies] == [status], (raw[:300], how)
    assert rest == b"", rest[:200]
    assert how in ("eof", "reset"), f"connection still open after {status}: {how}"
    assert replies[0].header("connection") == "close", replies[0]
    assert_serves(server)
    return replies[0]


def accepted(server, data):
    with Client(server) as c:
        reply = c.request(data)
    assert reply.status in (200, 404), reply
    return reply


def test_head_larger_than_max_head_size_is_431(limited):
    server, limits = limited
    filler = b"a" * (limits["head"] + 10)
    refused_once(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + filler + b"\r\n\r\n", 431)
    # just under the limit is fine
    fits = b"a" * (limits["head"] - 200)
    accepted(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + fits + b"\r\n\r\n")


def test_head_larger_than_max_head_size_sent_without_end_is_431(limited):
    server, limits = limited
    refused_once(server, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (limits["head"] + 10), 431)


def test_more_header_fields_than_max_headers_is_431(limited):
    server, limits = limited
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(limits["headers"]))   # + Host
    refused_once(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n", 431)
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(limits["headers"] - 1))
    assert accepted(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n").status == 200


def test_target_longer_than_max_target_is_414(limited):
    server, limits = limited
    refused_once(server, build("GET", "/" + "t" * limits["target"]), 414)
    assert accepted(server, build("GET", "/?" + "t" * (limits["target"] - 2))).status == 200


def test_target_longer_than_max_target_without_line_end_is_414(limited):
    server, limits = limited
    refused_once(server, b"GET /" + b"t" * (limits["target"] + 100), 414, shut=False)


def test_content_length_over_max_body_size_is_413_before_the_body(limited):
    server, limits = limited
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % (limits["body"] + 1))
    # only the head is sent: the answer must come without the body
    refused_once(server, head, 413)
    if limits["body"] <= 10 ** 6:
        body = b"b" * limits["body"]
        reply = accepted(server, build("POST", "/", [("Content-Type", "application/octet-stream")],
                                       body))
        assert reply.body == b'{"length":%d}' % limits["body"]


def test_chunked_body_over_max_body_size_is_413(limited):
    server, limits = limited
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    if limits["body"] <= 10 ** 6:
        half = limits["body"] // 2 + 1
        data = head + b"%x\r\n" % half + b"c" * half + b"\r\n" + b"%x\r\n" % half
    else:  # one chunk size line over the limit, no data needed
        data = head + b"%x\r\n" % (limits["body"] + 1)
    refused_once(server, data, 413)


def test_transfer_coding_other_than_chunked_is_501(limited):
    server, _ = limited
    data = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n")
    refused_once(server, data, 501)


def test_http2_request_line_is_505(limited):
    server, _ = limited
    refused_once(server, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)


# -- timeouts -------------------------------------------------------------------

timeouts = module_server("timeouts", ECHO,
                         "--head-timeout", "1", "--keep-alive-timeout", "1", "--body-timeout", "1")


def expect_408_then_close(sock):
    raw, how = read_to_close(sock, timeout=15)
    replies, rest = split_responses(raw)
    assert [r.status for r in replies] == [408], (raw[:300], how)
    assert how in ("eof", "reset") and rest == b"", (how, rest)


def test_partial_head_then_silence_gets_408(timeouts):
    with Client(timeouts) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        expect_408_then_close(c.sock)
    assert_serves(timeouts)


def test_slowloris_head_is_cut_off_not_extended_by_each_byte(timeouts):
    """One header byte every 0.3 s for up to 15 s: the head timeout (1 s) must end it."""
    header = b"X-Slow: " + b"s" * 42
    sent = 0
    with Client(timeouts) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        cut = False
        for byte in header:
            time.sleep(0.3)
            try:
                c.sock.send(bytes([byte]))
                sent += 1
            except OSError:
                cut = True
                break
            c.sock.setblocking(False)
            try:
                waiting = c.sock.recv(4096, socket.MSG_PEEK)
            except BlockingIOError:
                waiting = None
            except OSError:
                waiting = b""
            c.sock.setblocking(True)
            if waiting is not None:  # an answer or the end of the connection
                cut = True
                break
        assert cut, "the server kept reading a head that took 15 s to dribble in"
        assert sent < len(header)
        c.sock.settimeout(15)
        try:
            raw, _ = read_to_close(c.sock)
        except OSError:
            raw = b""
        replies, _ = split_responses(raw)
        assert [r.status for r in replies] in ([408], []), raw[:300]
    assert_serves(timeouts)


def test_idle_keep_alive_connection_is_closed(timeouts):
    with Client(timeouts) as c:
        assert c.request(build("GET", "/")).status == 200
        raw, how = c.read_to_close(timeout=15)
    assert (raw, how) == (b"", "eof"), (raw, how)


def test_connection_that_never_sends_is_closed(timeouts):
    with Client(timeouts) as c:
        raw, how = c.read_to_close(timeout=15)
    assert (raw, how) == (b"", "eof"), (raw, how)


def test_half_sent_body_gets_408(timeouts):
    with Client(timeouts) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"b" * 10)
        expect_408_then_close(c.sock)
    assert_serves(timeouts)


def test_half_sent_chunked_body_gets_408(timeouts):
    with Client(timeouts) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nbbbb")
        expect_408_then_close(c.sock)
    assert_serves(timeouts)


# -- connection cap ---------------------------------------------------------------

capped = module_server("capped", ECHO, "--max-connections", "5", "--keep-alive-timeout", "30")


def test_connection_over_max_connections_gets_503_and_close(capped):
    held = [Client(capped) for _ in range(5)]
    try:
        for c in held:   # all five accepted and served
            assert c.request(build("GET", "/")).status == 200
        extra = socket.create_connection((capped.host, capped.port), timeout=15)
        raw, how = read_to_close(extra)
        extra.close()
        replies, rest = split_responses(raw)
        assert [r.status for r in replies] == [503], (raw[:300], how)
        assert how in ("eof", "reset") and rest == b""
        for c in held:   # the five are unaffected
            assert c.request(post_json(b"{}")).status == 200
    finally:
        held.pop().close()
    try:
        # a freed slot is usable again
        def served():
            with Client(capped) as c:
                return c.request(build("GET", "/")).status == 200
        wait_until(lambda: _try(served), timeout=15, interval=0.2, what="a freed slot")
    finally:
        for c in held:
            c.close()


def test_connection_over_max_connections_sending_at_once_gets_503(capped):
    """A real client sends its request right after connecting; the 503 must still reach it."""
    held = [Client(capped) for _ in range(5)]
    try:
        for c in held:
            assert c.request(build("GET", "/")).status == 200
        outcomes = []
        for _ in range(20):
            extra = socket.create_connection((capped.host, capped.port), timeout=15)
            try:
                extra.sendall(build("GET", "/"))
                raw, how = read_to_close(extra)
            except OSError:
                raw, how = b"", "reset"
            extra.close()
            outcomes.append(([r.status for r in split_responses(raw)[0]], how))
        assert all(statuses == [503] for statuses, _ in outcomes), outcomes
    finally:
        for c in held:
            c.close()


def _try(fn):
    try:
        return fn()
    except (OSError, ConnectionError):
        return False
