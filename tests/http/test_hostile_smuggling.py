"""Request smuggling over the wire, against both parsers (compiled and pure Python).

Each malicious request is followed by a pipelined ``GET /smuggled``. The server must
answer the malicious request once (400 unless stated), end the connection, and never
parse a second request out of the leftovers: exactly one answer, never one for /smuggled.
"""

import socket
import time

import pytest

from support.servers import start, stop
from support.wire import (
    LENGTH_ECHO,
    Client,
    assert_serves,
    split_responses,
)

ECHO = LENGTH_ECHO

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
H = b"Host: x\r\n"
POST = b"POST / HTTP/1.1\r\n" + H + b"Content-Type: application/octet-stream\r\n"
TE = b"Transfer-Encoding: chunked\r\n"
BODY0 = b"0\r\n\r\n"


def chunked(*size_lines_and_rest):
    return POST + TE + b"\r\n" + b"".join(size_lines_and_rest)


CASES = {
    # Content-Length and Transfer-Encoding together, in both orders
    "cl_te": POST + b"Content-Length: 5\r\n" + TE + b"\r\n" + BODY0,
    "te_cl": POST + TE + b"Content-Length: 5\r\n\r\n" + BODY0,
    "cl0_te_body_is_request": POST + b"Content-Length: 0\r\n" + TE + b"\r\n" + BODY0,
    "te_obsfold_cl": POST + b"Content-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" + BODY0,
    # Content-Length forms
    "cl_duplicate_same": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl_duplicate_different": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_list": POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl_plus_sign": POST + b"Content-Length: +5\r\n\r\nhello",
    "cl_minus_sign": POST + b"Content-Length: -5\r\n\r\nhello",
    "cl_hex": POST + b"Content-Length: 0x5\r\n\r\nhello",
    "cl_inner_space": POST + b"Content-Length: 1 0\r\n\r\nhello12345",
    "cl_underscore": POST + b"Content-Length: 1_0\r\n\r\nhello12345",
    "cl_decimal_point": POST + b"Content-Length: 5.0\r\n\r\nhello",
    "cl_exponent": POST + b"Content-Length: 5e0\r\n\r\nhello",
    "cl_non_ascii_digit": POST + b"Content-Length: \xd9\xa5\r\n\r\nhello",
    "cl_overflow": POST + b"Content-Length: 18446744073709551621\r\n\r\nhello",
    "cl_overflow_long": POST + b"Content-Length: " + b"9" * 40 + b"\r\n\r\nhello",
    "cl_empty": POST + b"Content-Length: \r\n\r\nhello",
    "cl_trailing_garbage": POST + b"Content-Length: 5x\r\n\r\nhello",
    # Transfer-Encoding forms
    "te_chunked_not_final": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n" + BODY0,
    "te_two_fields_not_final": POST + TE + b"Transfer-Encoding: identity\r\n\r\n" + BODY0,
    "te_chunked_twice": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n" + BODY0,
    "te_identity": POST + b"Transfer-Encoding: identity\r\n\r\n" + BODY0,
    "te_xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n" + BODY0,
    "te_chunked_with_junk": POST + b"Transfer-Encoding: chunked;q=1\r\n\r\n" + BODY0,
    "te_quoted": POST + b'Transfer-Encoding: "chunked"\r\n\r\n' + BODY0,
    "te_empty": POST + b"Transfer-Encoding: \r\n\r\n" + BODY0,
    "te_in_http10": (b"POST / HTTP/1.0\r\nContent-Type: application/octet-stream\r\n" + TE
                     + b"\r\n" + BODY0),
    "te_space_before_colon": POST + b"Transfer-Encoding : chunked\r\n\r\n" + BODY0,
    "te_vertical_tab": POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n" + BODY0,
    # field syntax
    "obs_fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "obs_fold_tab": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n",
    "fold_first_line": b"GET / HTTP/1.1\r\n Host: x\r\n\r\n",
    "space_before_colon": POST + b"Content-Length : 5\r\n\r\nhello",
    "tab_before_colon": POST + b"Content-Length\t: 5\r\n\r\nhello",
    "no_colon": b"GET / HTTP/1.1\r\n" + H + b"X-A a\r\n\r\n",
    "empty_name": b"GET / HTTP/1.1\r\n" + H + b": a\r\n\r\n",
    "name_with_slash": b"GET / HTTP/1.1\r\n" + H + b"X/A: a\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "nul_in_name": b"GET / HTTP/1.1\r\n" + H + b"X-\x00A: a\r\n\r\n",
    "cr_in_value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "lf_in_value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nb\r\n\r\n",
    "bare_lf_hides_cl": POST + b"X-A: a\nContent-Length: 5\r\n\r\nhello",
    "bare_cr_hides_te": POST + b"X-A: a\rTransfer-Encoding: chunked\r\n\r\n" + BODY0,
    "del_in_value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n",
    "lf_only_line_ends": b"GET / HTTP/1.1\nHost: x\n\n",
    "no_host": b"GET / HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    # chunk framing
    "chunk_size_non_hex": chunked(b"zz\r\nhello\r\n", BODY0),
    "chunk_size_negative": chunked(b"-5\r\nhello\r\n", BODY0),
    "chunk_size_0x": chunked(b"0x5\r\nhello\r\n", BODY0),
    "chunk_size_overflow": chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n", BODY0),
    "chunk_size_overflow_ffff": chunked(b"f" * 17 + b"\r\nhello\r\n", BODY0),
    "chunk_size_empty": chunked(b"\r\nhello\r\n", BODY0),
    "chunk_size_space_inside": chunked(b"5 5\r\nhello\r\n", BODY0),
    "chunk_size_leading_space": chunked(b" 5\r\nhello\r\n", BODY0),
    "chunk_size_bare_lf": chunked(b"5\nhello\r\n", BODY0),
    "chunk_ext_without_name": chunked(b"5;\r\nhello\r\n", BODY0),
    "chunk_ext_bad_quote": chunked(b'5;a="b\r\nhello\r\n', BODY0),
    "chunk_ext_with_nul": chunked(b"5;a=\x00\r\nhello\r\n", BODY0),
    "chunk_data_longer_than_size": chunked(b"5\r\nhelloXX\r\n", BODY0),
    "chunk_data_without_crlf": chunked(b"5\r\nhello", BODY0),
    "chunk_data_bare_lf_after": chunked(b"5\r\nhello\n", BODY0),
    "chunk_data_shorter_than_size": chunked(b"9\r\nhello\r\n", BODY0),
    "last_chunk_trailer_obs_fold": chunked(b"0\r\nX-T: a\r\n b\r\n\r\n"),
    "last_chunk_trailer_nul": chunked(b"0\r\nX-T: a\x00\r\n\r\n"),
    "last_chunk_trailer_no_colon": chunked(b"0\r\nX-T\r\n\r\n"),
    # request line
    "method_with_at": b"G@T / HTTP/1.1\r\n" + H + b"\r\n",
    "method_with_nul": b"GET\x00 / HTTP/1.1\r\n" + H + b"\r\n",
    "method_empty": b" / HTTP/1.1\r\n" + H + b"\r\n",
    "double_space": b"GET  / HTTP/1.1\r\n" + H + b"\r\n",
    "tab_separators": b"GET\t/\tHTTP/1.1\r\n" + H + b"\r\n",
    "trailing_space": b"GET / HTTP/1.1 \r\n" + H + b"\r\n",
    "leading_space": b" GET / HTTP/1.1\r\n" + H + b"\r\n",
    "two_part_line": b"GET /\r\n" + H + b"\r\n",
    "target_without_slash": b"GET foo HTTP/1.1\r\n" + H + b"\r\n",
    "target_with_del": b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n",
    "target_with_nul": b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n",
    "target_with_8bit": b"GET /a\xffb HTTP/1.1\r\n" + H + b"\r\n",
    "target_asterisk_for_get": b"GET * HTTP/1.1\r\n" + H + b"\r\n",
    "target_absolute_without_host": b"GET http:///x HTTP/1.1\r\n" + H + b"\r\n",
    "target_cr_inside": b"GET /a\rb HTTP/1.1\r\n" + H + b"\r\n",
    "version_lowercase": b"GET / http/1.1\r\n" + H + b"\r\n",
    "version_missing_minor": b"GET / HTTP/1\r\n" + H + b"\r\n",
    "version_two_digit_minor": b"GET / HTTP/1.10\r\n" + H + b"\r\n",
    "version_garbage": b"GET / HTTP/1.1x\r\n" + H + b"\r\n",
    "version_letters": b"GET / HTTP/a.b\r\n" + H + b"\r\n",
    "version_space": b"GET / HTTP/ 1.1\r\n" + H + b"\r\n",
    "version_other_protocol": b"GET / FTP/1.1\r\n" + H + b"\r\n",
    "http09_style": b"GET /\r\n\r\n",
}

NOT_400 = {
    "version_unsupported_1_2": (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    "version_unsupported_2_0": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    "version_unsupported_0_9": (b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    "te_gzip_chunked": (POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n" + BODY0, 501),
    "expect_unknown": (POST + b"Expect: 200-ok\r\nContent-Length: 5\r\n\r\nhello", 417),
}

ALL = {name: (data, 400) for name, data in CASES.items()}
ALL.update(NOT_400)


@pytest.fixture(scope="module", params=["compiled", "pure"])
def server(request, tmp_path_factory):
    env = {"LITE_SERVING_PURE": "1"} if request.param == "pure" else {"LITE_SERVING_PURE": "0"}
    # the parser in use is named at debug level
    srv = start(tmp_path_factory.mktemp(f"smuggle-{request.param}"), ECHO,
                       "--log-level", "debug", env=env)
    want = "pure Python" if request.param == "pure" else "compiled"
    if want not in srv.log:
        stop(srv)
        pytest.skip(f"the {request.param} parser is not available")
    yield srv
    stop(srv)


def exchange(server, data):
    with Client(server) as c:
        c.send(data)
        raw, how = c.read_to_close(timeout=15)
    return raw, how


@pytest.mark.parametrize("name", sorted(ALL))
def test_smuggling_attempt_gets_one_answer_and_close(server, name):
    data, status = ALL[name]
    raw, how = exchange(server, data + SMUGGLED)
    replies, rest = split_responses(raw)
    assert how != "timeout", f"the server neither answered nor closed: {raw[:300]!r}"
    assert len(replies) == 1, f"{len(replies)} answers: {raw[:600]!r}"
    assert replies[0].status == status, replies[0]
    assert rest == b"", f"bytes after the answer: {rest[:200]!r}"
    assert b"smuggled" not in raw
    assert replies[0].header("connection") == "close", replies[0]


@pytest.mark.parametrize("name", sorted(ALL))
def test_smuggling_attempt_in_pieces_gets_one_answer_and_close(server, name):
    """The same bytes in small pieces (the partial-head and incremental chunk paths)."""
    data, status = ALL[name]
    data += SMUGGLED
    cuts = sorted({len(data) // 3, len(data) // 2, data.find(b"\r\n\r\n") + 3})
    with Client(server) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = 0
        try:
            for cut in cuts + [len(data)]:
                if cut > start:
                    c.send(data[start:cut])
                    start = cut
                    time.sleep(0.005)   # pieces in writes apart: the behaviour under test
        except OSError:  # the server may have answered and ended the connection already
            pass
        raw, how = c.read_to_close(timeout=15)
    replies, rest = split_responses(raw)
    assert how != "timeout", f"the server neither answered nor closed: {raw[:300]!r}"
    assert [r.status for r in replies] == [status], raw[:600]
    assert rest == b"" and b"smuggled" not in raw, raw[:600]


@pytest.mark.parametrize("name", sorted(ALL))
def test_smuggling_attempt_after_a_valid_predict_on_the_same_connection(server, name):
    """Behind a valid POST (answered on a predict thread, so the rest waits in the buffer)."""
    data, status = ALL[name]
    valid = POST + b"Content-Length: 5\r\n\r\nhello"
    raw, how = exchange(server, valid + data + SMUGGLED)
    replies, rest = split_responses(raw)
    assert how != "timeout", f"the server neither answered nor closed: {raw[:300]!r}"
    assert [r.status for r in replies] == [200, status], raw[:800]
    assert replies[0].body == b'{"length":5}'
    assert rest == b"" and b"smuggled" not in raw, raw[:800]


def test_control_valid_requests_are_both_answered(server):
    """The harness sees a second answer when there is one (so the test above means something)."""
    for data in (POST + b"Content-Length: 5\r\n\r\nhello",
                 chunked(b"5\r\nhello\r\n", BODY0),
                 chunked(b"5;a=b;c=\"d\"\r\nhello\r\n", b"0\r\nX-T: t\r\n\r\n")):
        with Client(server) as c:
            c.send(data + SMUGGLED)
            first = c.read()
            second = c.read()
        assert first.status == 200 and first.body == b'{"length":5}', first
        assert second.status == 404 and b"smuggled" in second.body, second


def test_server_still_serves_after_the_attacks(server):
    for name in ("cl_te", "chunk_data_longer_than_size", "obs_fold"):
        exchange(server, CASES[name] + SMUGGLED)
    assert_serves(server)
