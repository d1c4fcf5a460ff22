"""HTTP/1.1 on the wire: keep-alive, pipelining, framing, 100-continue, HTTP/1.0, bad input."""

import email.utils
import socket
import struct
import time

import pytest

from support.http_client import Connection, build_request, chunked, request
from support.servers import module_server, wait_for_new

SOURCE = """
    import sys
    import time

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            pass

        def predict(self, data, params):
            if params.get("sleep"):
                tag = params.get("tag", "")
                print("SLOW-START " + tag, file=sys.stderr, flush=True)
                time.sleep(float(params["sleep"]))
                print("SLOW-END " + tag, file=sys.stderr, flush=True)
            return data


    if __name__ == "__main__":
        serv.run(Predictor)
"""


server = module_server("http", SOURCE)


def echo_request(body, target="/", extra=()):
    return build_request("POST", target, [("Content-Type", "application/octet-stream"), *extra],
                         body)


def assert_root(resp):
    assert resp.status == 200, resp
    assert "message" in resp.json()


def assert_echo(resp, body):
    assert resp.status == 200, resp
    assert resp.body == body


def assert_serves(server):
    """A fresh connection still gets answers."""
    assert_root(request(server, "GET", "/"))
    resp = request(server, "POST", "/", [("Content-Type", "text/plain")], b"still here")
    assert_echo(resp, b"still here")


# -- connections ------------------------------------------------------------

def test_keep_alive_serves_several_requests_on_one_socket(server):
    with Connection(server.host, server.port) as conn:
        for i in range(5):
            conn.send(build_request("GET", "/"))
            assert_root(conn.read_response())
            body = b"request %d" % i
            conn.send(echo_request(body))
            assert_echo(conn.read_response(), body)
        conn.send(build_request("HEAD", "/"))
        assert conn.read_response(head=True).status == 200
        conn.send(echo_request(b"after head"))
        assert_echo(conn.read_response(), b"after head")


def test_pipelined_requests_are_answered_in_order(server):
    with Connection(server.host, server.port) as conn:
        conn.send(build_request("GET", "/") + echo_request(b"one") + build_request("GET", "/")
                  + echo_request(b"two") + echo_request(b"three") + build_request("GET", "/"))
        answers = conn.read_responses(6)
    assert_root(answers[0])
    assert_echo(answers[1], b"one")
    assert_root(answers[2])
    assert_echo(answers[3], b"two")
    assert_echo(answers[4], b"three")
    assert_root(answers[5])


def test_pipelined_immediate_answer_waits_for_a_slow_predict_before_it(server):
    with Connection(server.host, server.port) as conn:
        conn.send(echo_request(b"slow first", "/?sleep=0.5&tag=pipe")
                  + build_request("GET", "/") + build_request("HEAD", "/") + echo_request(b"last"))
        answers = conn.read_responses(4, heads=(2,))
    assert_echo(answers[0], b"slow first")
    assert_root(answers[1])
    assert answers[2].status == 200 and answers[2].body == b""
    assert_echo(answers[3], b"last")


def test_request_split_byte_by_byte(server):
    body = b'{"split": "across many writes"}'
    data = echo_request(body, "/?x=1", [("X-Long-Header", "v" * 40)])
    with Connection(server.host, server.port) as conn:
        for i in range(len(data)):
            conn.send(data[i:i + 1])
            time.sleep(0.002)   # one byte per write, apart: the behaviour under test
        assert_echo(conn.read_response(), body)
        # the connection is still usable afterwards
        conn.send(build_request("GET", "/"))
        assert_root(conn.read_response())


def test_chunked_request_split_byte_by_byte(server):
    body = chunked(b"abc", b"defgh", extensions={0: b";x=y"}, trailers=[("X-T", "1")])
    data = build_request("POST", "/", [("Transfer-Encoding", "chunked")], body)
    with Connection(server.host, server.port) as conn:
        for i in range(len(data)):
            conn.send(data[i:i + 1])
            time.sleep(0.002)   # one byte per write, apart: the behaviour under test
        assert_echo(conn.read_response(), b"abcdefgh")


def test_content_length_body_large(server):
    body = bytes(range(256)) * 4096  # 1 MiB
    with Connection(server.host, server.port) as conn:
        conn.send(echo_request(body))
        assert_echo(conn.read_response(), body)


def test_chunked_body_with_extensions_and_trailers_then_next_request(server):
    body = chunked(b"Wiki", b"pedia", extensions={0: b";name=value", 1: b";flag"},
                   trailers=[("X-Trailer", "x"), ("X-Second", "y")])
    with Connection(server.host, server.port) as conn:
        conn.send(build_request("POST", "/", [("Transfer-Encoding", "chunked")], body)
                  + build_request("GET", "/"))
        assert_echo(conn.read_response(), b"Wikipedia")
        assert_root(conn.read_response())


def test_expect_100_continue_with_content_length(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        interim = conn.read_response()  # the body is not sent yet: this must be the 100
        assert interim.status == 100
        assert interim.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n")
        conn.send(b"hello world")
        final = conn.read_response()
        assert_echo(final, b"hello world")


def test_expect_100_continue_with_chunked_body(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        interim = conn.read_response()
        assert interim.status == 100
        conn.send(chunked(b"chunk", b"ed"))
        assert_echo(conn.read_response(), b"chunked")


def test_http10_closes_by_default(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        assert_root(conn.read_response())
        assert conn.closed_by_peer()


def test_http10_keep_alive_when_asked(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = conn.read_response()
        assert_root(first)
        assert (first.header("connection") or "").lower() == "keep-alive"
        conn.send(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc")
        second = conn.read_response()
        assert_echo(second, b"abc")
        assert (second.header("connection") or "").lower() == "keep-alive"


def test_http11_connection_close_closes(server):
    with Connection(server.host, server.port) as conn:
        conn.send(build_request("GET", "/", [("Connection", "close")]))
        assert_root(conn.read_response())
        assert conn.closed_by_peer()


@pytest.mark.parametrize("target,expect", [
    ("http://example.com/", "echo"),
    ("http://example.com:8080/?x=1", "echo"),
    ("http://example.com/elsewhere", 404),
])
def test_absolute_form_target(server, target, expect):
    resp = request(server, "POST", target, [("Content-Type", "text/plain")], b"absolute")
    if expect == "echo":
        assert_echo(resp, b"absolute")
    else:
        assert resp.status == expect


def test_absolute_form_get(server):
    assert_root(request(server, "GET", "http://example.com/"))


def test_every_response_has_content_length_date_and_server(server):
    raw_requests = [
        (build_request("GET", "/"), False),
        (build_request("HEAD", "/"), True),
        (build_request("OPTIONS", "/", [("Origin", "http://o")]), False),
        (echo_request(b"x"), False),
        (echo_request(b""), False),
        (build_request("GET", "/missing"), False),
        (build_request("PUT", "/"), False),
        (build_request("POST", "/", [("Content-Type", "application/json")], b"{}"), False),
        (b"BROKEN REQUEST LINE\r\n\r\n", False),
    ]
    for raw, head in raw_requests:
        with Connection(server.host, server.port) as conn:
            conn.send(raw)
            resp = conn.read_response(head=head)
        assert resp.header("content-length") is not None, (raw, resp)
        if not head:
            assert int(resp.header("content-length")) == len(resp.body), (raw, resp)
        assert resp.header("server"), (raw, resp)
        date = resp.header("date")
        assert date and email.utils.parsedate_to_datetime(date) is not None, (raw, resp)
        assert date.endswith("GMT"), (raw, resp)


# -- bad input ----------------------------------------------------------------

MALFORMED = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "bad version": b"GET / HTTX/1.1\r\nHost: t\r\n\r\n",
    "bad content-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\nabc",
    "negative content-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc",
    "conflicting content-lengths": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                                   b"Content-Length: 4\r\n\r\nabcd",
    "content-length and chunked": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost: t\r\nNoColonHere\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_request_gets_4xx_and_close(server, name):
    with Connection(server.host, server.port) as conn:
        conn.send(MALFORMED[name])
        resp = conn.read_response()
        assert 400 <= resp.status < 500, resp
        assert conn.closed_by_peer(), "the connection stays open after a malformed request"
    assert_serves(server)


@pytest.mark.parametrize("ahead, assert_first", [
    (build_request("GET", "/"), assert_root),
    (echo_request(b"first", "/?sleep=0.2&tag=bad-behind"), lambda resp: assert_echo(resp, b"first")),
], ids=["after_a_good_one", "pipelined_behind_a_slow_predict"])
def test_malformed_request_behind_another_on_the_same_socket(server, ahead, assert_first):
    """The request ahead is answered, then the malformed one gets a 4xx and the close."""
    with Connection(server.host, server.port) as conn:
        conn.send(ahead + b"GARBAGE\r\n\r\n")
        assert_first(conn.read_response())
        assert 400 <= conn.read_response().status < 500
        assert conn.closed_by_peer()
    assert_serves(server)


def test_client_disconnects_mid_head(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Le")
    assert_serves(server)


def test_client_disconnects_mid_body(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")
    assert_serves(server)


def reset(conn):
    """Close with an RST instead of a FIN."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_client_resets_mid_body(server):
    conn = Connection(server.host, server.port)
    conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
    reset(conn)
    assert_serves(server)


def test_client_leaves_before_a_slow_answer(server):
    mark = len(server.lines)
    conn = Connection(server.host, server.port)
    conn.send(echo_request(b"nobody reads this", "/?sleep=0.3&tag=gone"))
    wait_for_new(server, mark, r"SLOW-START gone")
    reset(conn)
    wait_for_new(server, mark, r"SLOW-END gone")
    assert_serves(server)
    assert server.proc.poll() is None


def test_client_leaves_without_reading_many_answers(server):
    conn = Connection(server.host, server.port)
    conn.send(b"".join(echo_request(b"z" * 20000) for _ in range(50)))
    reset(conn)
    with Connection(server.host, server.port) as conn2:
        conn2.send(build_request("GET", "/"))
        conn2.send(b"".join(build_request("GET", "/") for _ in range(200)))
        conn2.close()
    assert_serves(server)
    assert server.proc.poll() is None


# -- more framing ---------------------------------------------------------------

def test_many_pipelined_requests_in_one_write(server):
    data, expected = b"", []
    for i in range(60):
        if i % 3 == 0:
            data += build_request("GET", "/")
            expected.append(None)
        else:
            body = b"body-%d" % i
            data += echo_request(body)
            expected.append(body)
    with Connection(server.host, server.port) as conn:
        conn.send(data)
        answers = conn.read_responses(len(expected))
    for resp, body in zip(answers, expected):
        if body is None:
            assert_root(resp)
        else:
            assert_echo(resp, body)


def test_chunked_data_that_looks_like_framing(server):
    tricky = b"0\r\n\r\nPOST / HTTP/1.1\r\n\r\n"
    body = chunked(tricky, b"\r\n", tricky)
    with Connection(server.host, server.port) as conn:
        conn.send(build_request("POST", "/", [("Transfer-Encoding", "chunked")], body)
                  + build_request("GET", "/"))
        assert_echo(conn.read_response(), tricky + b"\r\n" + tricky)
        assert_root(conn.read_response())


def test_transfer_encoding_is_case_insensitive(server):
    body = chunked(b"case", b"less")
    resp = request(server, "POST", "/", [("transfer-encoding", "Chunked")], body)
    assert_echo(resp, b"caseless")


def test_post_with_connection_close_closes_after_the_predict_answer(server):
    with Connection(server.host, server.port) as conn:
        conn.send(echo_request(b"bye", extra=[("Connection", "close")]))
        assert_echo(conn.read_response(), b"bye")
        assert conn.closed_by_peer()


def test_http10_post_closes_after_the_predict_answer(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.0\r\nContent-Length: 4\r\n\r\nold!")
        assert_echo(conn.read_response(), b"old!")
        assert conn.closed_by_peer()


def test_body_arrives_after_the_head_in_a_later_write(server):
    with Connection(server.host, server.port) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        time.sleep(0.05)   # writes apart (the behaviour under test)
        conn.send(b"01234")
        time.sleep(0.05)
        conn.send(b"56789" + build_request("GET", "/"))
        assert_echo(conn.read_response(), b"0123456789")
        assert_root(conn.read_response())
