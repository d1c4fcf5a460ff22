"""The request parser, both implementations: parser_py (pure) and parser_c (Cython).

Every test runs against each module through the ``P`` fixture. parser_c is
skipped, with the reason, when it is not built (``python setup.py
build_ext --inplace``); set LITE_SERVING_REQUIRE_COMPILED=1 (CI) to make a
missing parser_c fail instead.
"""

import copy
import pickle
import sys

import pytest

from lite_serving.http import parser_py
from lite_serving.http.parser_py import ParseError
from support.compiled import PARSER

parser_c = PARSER.module
compiled_or_skip = PARSER.get


@pytest.fixture(params=["py", "c"])
def P(request):
    """The parser module under test."""
    return parser_py if request.param == "py" else compiled_or_skip()


ATTRS = ("method", "target", "path", "query", "version", "fields", "end", "content_length",
         "chunked", "keep_alive", "expect_continue", "content_type", "accept", "origin",
         "request_id", "user_agent")

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
POST = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
        b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n")


def parse(P, data, **kw):
    head = P.parse_head(data, **kw)
    assert head is not None, "head reported incomplete"
    return head


def snapshot(head):
    return {name: getattr(head, name) for name in ATTRS}


def assert_error(P, data, status, message, **kw):
    with pytest.raises(ParseError) as info:
        P.parse_head(data, **kw)
    assert (info.value.status, info.value.message) == (status, message)


def req(*lines, version=b"HTTP/1.1", method=b"GET", target=b"/"):
    """A request head: request line, the given field lines, the blank line."""
    return b"\r\n".join([method + b" " + target + b" " + version, *lines]) + b"\r\n\r\n"


@pytest.mark.parametrize("limit", [None, 2**16, 2**29 - 1, sys.maxsize >> 2])
def test_the_compiled_parser_answers_itself(limit):
    """parser_c parses a head in C for any limit up to sys.maxsize >> 2 (2**29 - 1 on 32-bit
    platforms): its own RequestHead answers, not parser_py's. Its bound on limits was once 0 on
    armv7, so that every head went to parser_py, a hundred times slower."""
    P = compiled_or_skip()
    kw = {} if limit is None else {"max_head": limit, "max_headers": limit, "max_target": limit}
    for data in (GET, bytearray(POST)):
        assert type(P.parse_head(data, **kw)) is P.RequestHead
    # past it, parser_py's exact rules
    assert type(P.parse_head(GET, max_head=(sys.maxsize >> 2) + 1)) is parser_py.RequestHead


def test_a_start_past_the_end_is_an_incomplete_head(P):
    assert P.parse_head(GET, start=len(GET) + 100) is None
    assert P.parse_head(bytearray(GET), start=len(GET) + 1) is None


def test_one_exception_class(P):
    assert P.ParseError is parser_py.ParseError
    assert (P.MAX_HEAD, P.MAX_HEADERS, P.MAX_TARGET) == (
        parser_py.MAX_HEAD, parser_py.MAX_HEADERS, parser_py.MAX_TARGET)


# ---------------------------------------------------------------- valid heads

def test_simple_get(P):
    head = parse(P, GET)
    assert snapshot(head) == {
        "method": "GET", "target": "/", "path": "/", "query": "", "version": 1,
        "fields": [("host", "example.com")], "end": len(GET), "content_length": -1,
        "chunked": False, "keep_alive": True, "expect_continue": False,
        "content_type": None, "accept": None, "origin": None, "request_id": None,
        "user_agent": None,
    }
    for name in ("method", "target", "path", "query"):
        assert type(getattr(head, name)) is str
    for name in ("chunked", "keep_alive", "expect_continue"):
        assert type(getattr(head, name)) is bool
    assert type(head.version) is int and type(head.end) is int
    assert type(head.content_length) is int
    assert all(type(n) is str and type(v) is str for n, v in head.fields)
    assert repr(head) == "<RequestHead GET / HTTP/1.1>"


def test_post_with_content_length(P):
    data = POST + b'{"x": 1}'
    head = parse(P, data)
    assert head.method == "POST"
    assert head.content_length == 45
    assert head.end == len(POST)
    assert head.content_type == "application/json"
    assert head.accept == "*/*"
    assert head.keep_alive is True
    assert head.fields == [("host", "127.0.0.1:8080"), ("user-agent", "wrk"), ("accept", "*/*"),
                           ("connection", "keep-alive"), ("content-type", "application/json"),
                           ("content-length", "45")]


def test_bytearray_and_bytes_agree(P):
    assert snapshot(parse(P, bytearray(POST))) == snapshot(parse(P, POST))


def test_fields_survive_reuse_of_a_bytearray_buffer(P):
    buf = bytearray(POST)
    head = parse(P, buf)
    buf[:] = b"X" * len(buf)
    assert head.fields[0] == ("host", "127.0.0.1:8080")


def test_fields_is_one_list(P):
    head = parse(P, POST)
    head.fields.append(("x-added", "1"))
    assert head.fields[-1] == ("x-added", "1")


@pytest.mark.parametrize("target, path, query", [
    (b"/p?q", "/p", "q"),
    (b"/a/b?x=1&y=2", "/a/b", "x=1&y=2"),
    (b"/?", "/", ""),
    (b"/p?a?b", "/p", "a?b"),
    (b"http://h/p?q", "/p", "q"),
    (b"http://h", "/", ""),
    (b"http://h?x", "/", "x"),
    (b"https://h:8080/a/b", "/a/b", ""),
    (b"HTTP://H/p", "/p", ""),
    (b"hTTpS://h?", "/", ""),
])
def test_target_forms(P, target, path, query):
    head = parse(P, req(b"Host: h", target=target))
    assert (head.target, head.path, head.query) == (target.decode(), path, query)


def test_asterisk_form_for_options_only(P):
    head = parse(P, req(b"Host: h", method=b"OPTIONS", target=b"*"))
    assert (head.target, head.path, head.query) == ("*", "*", "")
    assert_error(P, req(b"Host: h", target=b"*"), 400,
                 "asterisk-form target is only valid for OPTIONS")
    assert_error(P, req(b"Host: h", method=b"options", target=b"*"), 400,
                 "asterisk-form target is only valid for OPTIONS")
    assert_error(P, req(b"Host: h", method=b"OPTIONS", target=b"*x"), 400, "invalid request target")


@pytest.mark.parametrize("target, message", [
    (b"http://", "absolute-form target without a host"),
    (b"http:///p", "absolute-form target without a host"),
    (b"https://?q", "absolute-form target without a host"),
    (b"ftp://h/", "invalid request target"),
    (b"p", "invalid request target"),
    (b"http:/h", "invalid request target"),
])
def test_bad_target_forms(P, target, message):
    assert_error(P, req(b"Host: h", target=target), 400, message)


def test_leading_empty_lines_ignored(P):
    data = b"\r\n\r\n\r\n" + GET
    head = parse(P, data)
    assert head.method == "GET" and head.end == len(data)


def test_leading_empty_lines_count_against_max_head(P):
    data = b"\r\n" * 4 + GET
    assert parse(P, data, max_head=len(data)).end == len(data)
    assert_error(P, data, 431, "request head too large", max_head=len(data) - 1)


def test_crlf_flood_is_bounded(P):
    assert P.parse_head(b"\r\n" * 100) is None
    assert_error(P, b"\r\n" * 40000, 431, "request head too large")


def test_http10(P):
    head = parse(P, b"GET / HTTP/1.0\r\n\r\n")
    assert head.version == 0 and head.keep_alive is False and head.fields == []
    head = parse(P, req(b"Connection: keep-alive", version=b"HTTP/1.0"))
    assert head.keep_alive is True
    head = parse(P, req(b"Connection: Keep-Alive", b"Host: a", b"Host: b", version=b"HTTP/1.0"))
    assert head.keep_alive is True and head.version == 0


@pytest.mark.parametrize("lines, keep_alive", [
    ((b"Connection: close",), False),
    ((b"Connection: CLOSE",), False),
    ((b"Connection:  upgrade ,\tclose ",), False),
    ((b"Connection: keep-alive", b"Connection: close"), False),
    ((b"Connection: close, keep-alive",), False),
    ((b"Connection: closed",), True),
    ((b"Connection: upgrade",), True),
    ((b"Connection:",), True),
])
def test_connection_on_http11(P, lines, keep_alive):
    assert parse(P, req(b"Host: h", *lines)).keep_alive is keep_alive


def test_expect(P):
    assert parse(P, req(b"Host: h", b"Expect: 100-continue")).expect_continue is True
    assert parse(P, req(b"Host: h", b"Expect:  100-Continue\t")).expect_continue is True
    assert parse(P, req(b"Host: h")).expect_continue is False
    # HTTP/1.0 clients cannot expect anything: ignored, even unknown ones
    assert parse(P, req(b"Expect: 100-continue", version=b"HTTP/1.0")).expect_continue is False
    assert parse(P, req(b"Expect: teapot", version=b"HTTP/1.0")).expect_continue is False
    for value in (b"teapot", b"100-continue, x", b"", b"100-continu"):
        assert_error(P, req(b"Host: h", b"Expect: " + value), 417,
                     "only the 100-continue expectation is supported")
    # the last Expect field counts
    assert parse(P, req(b"Host: h", b"Expect: x", b"Expect: 100-continue")).expect_continue is True


def test_field_value_ows_trimmed(P):
    head = parse(P, req(b"Host: h", b"X-A:   spaced \t value \t ", b"X-B:\tv", b"X-C:", b"X-D:  \t "))
    assert head.fields[1:] == [("x-a", "spaced \t value"), ("x-b", "v"), ("x-c", ""), ("x-d", "")]


def test_obs_text_in_values(P):
    head = parse(P, req(b"Host: h", b"X-Name: caf\xc3\xa9 \xff", b"Origin: http://\xe9"))
    assert head.fields[1] == ("x-name", "caf\xc3\xa9 \xff")
    assert head.origin == "http://\xe9"


def test_accept_joined_content_type_first_origin_last(P):
    head = parse(P, req(b"Host: h", b"Accept: a/b", b"Content-Type: text/plain", b"ACCEPT:  c/d ",
                        b"content-type: application/json", b"Origin: http://one",
                        b"accept: e", b"Origin: http://two"))
    assert head.accept == "a/b,c/d,e"
    assert head.content_type == "text/plain"
    assert head.origin == "http://two"
    assert parse(P, req(b"Host: h", b"Accept:")).accept == ""


def test_request_id_and_user_agent_lifted(P):
    head = parse(P, req(b"Host: h", b"X-Openbayes-Serving-Request-Id: 42", b"User-Agent: curl/8",
                        b"x-request-id:  abc-1 ", b"X-Request-Id: second", b"user-agent: other"))
    assert head.request_id == "abc-1"  # X-Request-Id first, over the platform's id
    assert head.user_agent == "curl/8"
    head = parse(P, req(b"Host: h", b"X-OpenBayes-Serving-Request-Id: 42"))
    assert head.request_id == "42" and head.user_agent is None


def test_field_names_lowercased_in_order(P):
    head = parse(P, req(b"HoSt: h", b"X-Custom-HEADER: V", b"x-custom-header: w"))
    assert head.fields == [("host", "h"), ("x-custom-header", "V"), ("x-custom-header", "w")]


@pytest.mark.parametrize("data", [GET, POST, b"\r\n" + GET, req(b"Host: h", b"Transfer-Encoding: chunked"),
                                  b"OPTIONS * HTTP/1.0\r\n\r\n"])
def test_incomplete_at_every_split_point(P, data):
    for cut in range(len(data)):
        assert P.parse_head(data[:cut]) is None, cut
        assert P.parse_head(bytearray(data[:cut])) is None, cut
    assert P.parse_head(data).end == len(data)


def test_pipelined_requests(P):
    second = req(b"Host: h", method=b"DELETE", target=b"/thing?id=3")
    data = POST + b"x" * 45 + second + b"GET /par"
    first = parse(P, data)
    assert first.end == len(POST)
    nxt = parse(P, data, start=first.end + first.content_length)
    assert (nxt.method, nxt.path, nxt.query) == ("DELETE", "/thing", "id=3")
    assert nxt.end == len(POST) + 45 + len(second)
    assert P.parse_head(data, nxt.end) is None


def test_start_offset(P):
    data = b"garbage that is not HTTP\r\n\r\n" + GET
    head = parse(P, data, start=28)
    assert head.end == len(data) and head.fields == [("host", "example.com")]
    assert P.parse_head(data, start=len(data)) is None
    assert P.parse_head(data, start=len(data) + 10) is None


def test_content_length_values(P):
    assert parse(P, req(b"Host: h", b"Content-Length: 0")).content_length == 0
    assert parse(P, req(b"Host: h", b"Content-Length: 007")).content_length == 7
    assert parse(P, req(b"Host: h", b"Content-Length:  12 ")).content_length == 12
    assert parse(P, req(b"Host: h", b"Content-Length: " + b"9" * 18)).content_length == 10 ** 18 - 1


def test_chunked_transfer_encoding(P):
    for value in (b"chunked", b"Chunked", b" ,chunked, ", b"CHUNKED"):
        head = parse(P, req(b"Host: h", b"Transfer-Encoding: " + value))
        assert head.chunked is True and head.content_length == -1
    head = parse(P, req(b"Host: h", b"Transfer-Encoding:", b"Transfer-Encoding: chunked"))
    assert head.chunked is True


def test_limits_exactly_at_the_edge(P):
    assert parse(P, GET, max_head=len(GET)).end == len(GET)
    assert_error(P, GET, 431, "request head too large", max_head=len(GET) - 1)
    data = req(*[b"X-%d: v" % i for i in range(5)], b"Host: h")
    assert len(parse(P, data, max_headers=6).fields) == 6
    assert_error(P, data, 431, "too many header fields", max_headers=5)
    assert parse(P, req(b"Host: h", target=b"/" + b"a" * 9), max_target=10).target == "/" + "a" * 9


# ---------------------------------------------------------------- invalid heads

@pytest.mark.parametrize("line, message", [
    (b"GET  / HTTP/1.1", "malformed request line"),
    (b"GET / HTTP/1.1 ", "malformed request line"),
    (b"GET /  HTTP/1.1", "malformed request line"),
    (b"GET /", "malformed request line"),
    (b"GET", "malformed request line"),
    (b"GET\t/\tHTTP/1.1", "malformed request line"),
    (b"GET\t/ HTTP/1.1", "malformed request line"),
    (b"GET /a b HTTP/1.1", "malformed request line"),
    (b" / HTTP/1.1", "invalid method"),
    (b"G\tET / HTTP/1.1", "invalid method"),
    (b"GE(T / HTTP/1.1", "invalid method"),
    (b"GET@ / HTTP/1.1", "invalid method"),
    (b"G\xc3\x89T / HTTP/1.1", "invalid method"),
    (b"GET /a\x01b HTTP/1.1", "invalid request target"),
    (b"GET /a\x7fb HTTP/1.1", "invalid request target"),
    (b"GET /caf\xc3\xa9 HTTP/1.1", "invalid request target"),
    (b"GET /a\tb HTTP/1.1", "invalid request target"),
    (b"GET /\x00 HTTP/1.1", "invalid request target"),
    (b"GET / HTTP/1.x", "invalid HTTP version"),
    (b"GET / http/1.1", "invalid HTTP version"),
    (b"GET / HTTP/1.10", "invalid HTTP version"),
    (b"GET / HTTP/11", "invalid HTTP version"),
    (b"GET / HTTP/1,1", "invalid HTTP version"),
    (b"GET / HTTPS/1.1", "invalid HTTP version"),
    (b"GET / HTTP/1.1\r", "invalid HTTP version"),
    (b"GET / ", "invalid HTTP version"),
])
def test_bad_request_line(P, line, message):
    assert_error(P, line + b"\r\nHost: h\r\n\r\n", 400, message)


@pytest.mark.parametrize("version", [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.1"])
def test_unsupported_version(P, version):
    assert_error(P, req(b"Host: h", version=version), 505,
                 "HTTP version not supported; use HTTP/1.1 or HTTP/1.0")


def test_request_line_checks_come_first(P):
    # a bad request line wins over bad fields and too many fields
    assert_error(P, b"GET  / HTTP/1.1\r\nbad line\r\n\r\n", 400, "malformed request line")
    assert_error(P, b"GET / HTTP/1.2\r\n" + b"X: y\r\n" * 5 + b"\r\n", 505,
                 "HTTP version not supported; use HTTP/1.1 or HTTP/1.0", max_headers=2)


def test_target_too_long(P):
    assert_error(P, req(b"Host: h", target=b"/" + b"a" * 10), 414, "request target too long",
                 max_target=10)
    assert_error(P, req(b"Host: h", target=b"/" + b"a" * 50), 414, "request line too long",
                 max_target=10)
    # detected before the head is complete: no CRLF within max_target + 32 bytes
    start = b"GET /" + b"a" * 100
    assert P.parse_head(start[:42], max_target=10) is None
    assert_error(P, start[:43], 414, "request line too long", max_target=10)


def test_head_too_large(P):
    partial = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 100
    assert P.parse_head(partial, max_head=len(partial) + 1) is None
    assert_error(P, partial, 431, "request head too large", max_head=len(partial))
    big = req(b"Host: h", b"X: " + b"v" * 100)
    assert_error(P, big, 431, "request head too large", max_head=len(big) - 1)


def test_too_many_headers(P):
    data = req(*[b"X-%d: v" % i for i in range(101)], b"Host: h")
    assert_error(P, data, 431, "too many header fields")
    # counted before any field line is looked at
    data = req(b"Bad Name: v", b"X: y", b"Z: w")
    assert_error(P, data, 431, "too many header fields", max_headers=2)
    data = req(b"Content-Length: x", b"X: y", b"Z: w")
    assert_error(P, data, 431, "too many header fields", max_headers=2)
    assert_error(P, data, 400, "invalid Content-Length", max_headers=3)


@pytest.mark.parametrize("line, message", [
    (b"Host : h", "invalid header field name"),
    (b"Host\t: h", "invalid header field name"),
    (b"Ho(st: h", "invalid header field name"),
    (b"H\xc3\xa9: h", "invalid header field name"),
    (b": h", "header field without a name or colon"),
    (b"Host h", "header field without a name or colon"),
    (b"Host", "header field without a name or colon"),
    (b" Host: h", "obsolete line folding is not allowed"),
    (b"\tHost: h", "obsolete line folding is not allowed"),
    (b"X: a\x00b", "invalid character in header field value"),
    (b"X: a\x7fb", "invalid character in header field value"),
    (b"X: a\x1bb", "invalid character in header field value"),
    (b"X: a\x0bb", "invalid character in header field value"),
    (b"X: a\rb", "bare CR or LF in request head"),
    (b"X: a\nb", "bare CR or LF in request head"),
    (b"X: a\x00\nb", "bare CR or LF in request head"),
    (b"X\r: a", "bare CR or LF in request head"),
    (b"\nX: a", "bare CR or LF in request head"),
])
def test_bad_field_line(P, line, message):
    assert_error(P, req(b"Host: h", line), 400, message)
    assert_error(P, req(line, b"Host: h"), 400, message)


def test_folded_continuation_line(P):
    assert_error(P, b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  continued\r\n\r\n", 400,
                 "obsolete line folding is not allowed")


def test_first_bad_line_wins(P):
    assert_error(P, req(b"Host: h", b"X: a\x00", b" folded"), 400,
                 "invalid character in header field value")
    assert_error(P, req(b"Host: h", b"Content-Length: 1", b"Content-Length: 1", b"Bad Name: v"),
                 400, "duplicate Content-Length")


def test_bare_lf_line_endings(P):
    data = b"GET / HTTP/1.1\nHost: h\n\n"
    # never a CRLFCRLF: such a head would never end, so it is refused at once (RFC 9112 §2.2)
    assert_error(P, data, 400, "bare LF in request head; lines must end with CRLF")
    for cut in range(1, len(data)):
        if b"\n" in data[:cut]:
            assert_error(P, data[:cut], 400, "bare LF in request head; lines must end with CRLF")
        else:
            assert P.parse_head(data[:cut]) is None
    assert_error(P, data, 431, "request head too large", max_head=len(data))
    assert_error(P, b"\r\n\nGET / HTTP/1.1\r\n", 400, "bare LF in request head; lines must end with CRLF")
    assert_error(P, b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400, "bare CR or LF in request head")
    assert_error(P, b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "malformed request line")


def test_incomplete_heads_that_cannot_become_requests_are_refused_at_once(P):
    hello = bytes.fromhex("160301") + b"\x02\x00" + bytes(range(40))  # a TLS ClientHello's start
    for cut in range(1, len(hello)):
        assert_error(P, hello[:cut], 400, "a TLS handshake was sent to a plain-HTTP port; "
                     "use http:// for this address, or a port that serves TLS")
    for partial in (b"G\x00", b"GET\r", b"GE(", b"\r\nGET\x7f", b"\xff\xfe"):
        assert_error(P, partial, 400, "invalid method")
    for partial in (b"", b"\r", b"\r\n", b"\r\n\r", b"GET", b"GET ", b"GET /x\x00",
                    b"POST / HTTP/1.1\r\nHost: a\r\n", b"\r\n\r\nGET / HTTP/1.1\r"):
        assert P.parse_head(partial) is None, partial


def test_bare_cr_line_endings(P):
    assert_error(P, b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400, "bare CR or LF in request head")
    assert_error(P, b"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", 400, "bare CR or LF in request head")
    assert_error(P, b"GET / HTTP/1.1\rHost: h\r\n\r\n", 400, "malformed request line")


@pytest.mark.parametrize("value", [b"+5", b"-5", b"0x5", b"5 5", b"5\t5", b"5,5", b"1, 2", b"5a",
                                   b"", b"1" * 19, b"9" * 30, b"\xef\xbc\x95", b"\xb2", b"5.0"])
def test_invalid_content_length(P, value):
    assert_error(P, req(b"Host: h", b"Content-Length: " + value), 400, "invalid Content-Length")


@pytest.mark.parametrize("second", [b"5", b"6", b"x"])
def test_duplicate_content_length(P, second):
    assert_error(P, req(b"Host: h", b"Content-Length: 5", b"content-length: " + second), 400,
                 "duplicate Content-Length")


@pytest.mark.parametrize("lines", [
    (b"Content-Length: 5", b"Transfer-Encoding: chunked"),
    (b"Transfer-Encoding: chunked", b"Content-Length: 5"),
    (b"Transfer-Encoding: gzip, chunked", b"Content-Length: 0"),
])
def test_content_length_and_transfer_encoding(P, lines):
    assert_error(P, req(b"Host: h", *lines), 400, "both Content-Length and Transfer-Encoding")


@pytest.mark.parametrize("values, status, message", [
    ((b"chunked, gzip",), 400, "chunked must be the final transfer coding"),
    ((b"gzip",), 400, "chunked must be the final transfer coding"),
    ((b"",), 400, "chunked must be the final transfer coding"),
    ((b" , ",), 400, "chunked must be the final transfer coding"),
    ((b"chunked", b"gzip"), 400, "chunked must be the final transfer coding"),
    ((b"gzip, chunked",), 501, "unsupported transfer coding; only chunked is implemented"),
    ((b"gzip", b"chunked"), 501, "unsupported transfer coding; only chunked is implemented"),
    ((b"identity, chunked",), 501, "unsupported transfer coding; only chunked is implemented"),
    ((b"chunked, chunked",), 400, "chunked applied more than once"),
    ((b"chunked", b"Chunked"), 400, "chunked applied more than once"),
    ((b"ch@nked",), 400, "invalid transfer coding"),
    ((b"chunked, g zip",), 400, "invalid transfer coding"),
    ((b"gzip;q=1, chunked",), 400, "invalid transfer coding"),
])
def test_transfer_encoding_rules(P, values, status, message):
    lines = [b"Transfer-Encoding: " + v for v in values]
    assert_error(P, req(b"Host: h", *lines), status, message)


def test_transfer_encoding_in_http10(P):
    assert_error(P, req(b"Transfer-Encoding: chunked", version=b"HTTP/1.0"), 400,
                 "Transfer-Encoding in an HTTP/1.0 request")
    assert_error(P, req(b"Transfer-Encoding: gzip", version=b"HTTP/1.0"), 400,
                 "Transfer-Encoding in an HTTP/1.0 request")


@pytest.mark.parametrize("lines", [(), (b"Host: a", b"Host: b"), (b"Host: a", b"host: a"),
                                   (b"X-Host: a",)])
def test_host_required_once_on_http11(P, lines):
    assert_error(P, req(*lines), 400, "an HTTP/1.1 request needs exactly one Host field")


def test_post_field_checks_order(P):
    # Transfer-Encoding problems, then Host, then Expect
    assert_error(P, req(b"Transfer-Encoding: gzip", b"Expect: x"), 400,
                 "chunked must be the final transfer coding")
    assert_error(P, req(b"Expect: x"), 400, "an HTTP/1.1 request needs exactly one Host field")


# ---------------------------------------------------------------- ChunkedDecoder

def decode(P, data, max_body=1 << 20, **kw):
    dec = P.ChunkedDecoder(max_body, **kw)
    pos = dec.feed(data)
    return dec, pos


def assert_chunk_error(P, data, status, message, max_body=1 << 20, **kw):
    dec = P.ChunkedDecoder(max_body, **kw)
    with pytest.raises(ParseError) as info:
        dec.feed(data)
    assert (info.value.status, info.value.message) == (status, message)


SIMPLE = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


def test_chunked_simple(P):
    dec, pos = decode(P, SIMPLE)
    assert dec.done is True and pos == len(SIMPLE)
    assert dec.body() == b"hello world" and type(dec.body()) is bytes
    assert dec.size == 11 and dec.trailers == []


def test_chunked_not_done_until_the_end(P):
    dec, pos = decode(P, SIMPLE[:-2])
    assert dec.done is False and dec.body() == b"hello world"
    assert dec.feed(SIMPLE, pos) == len(SIMPLE) and dec.done is True


def test_chunked_empty_body(P):
    dec, pos = decode(P, b"0\r\n\r\n")
    assert dec.done and dec.body() == b"" and dec.size == 0 and pos == 5


@pytest.mark.parametrize("line", [b"5;name=value", b"5;name", b'5;n="quoted \\" \\\\ str"',
                                  b"5 ; n = v", b"5\t;\tn\t=\t\"v\"", b"5;a=1;b;c=\"\"",
                                  b'5;n="caf\xc3\xa9"'])
def test_chunk_extensions_accepted(P, line):
    dec, _ = decode(P, line + b"\r\nhello\r\n0;last\r\n\r\n")
    assert dec.done and dec.body() == b"hello"


@pytest.mark.parametrize("line", [b"5;", b"5;=v", b"5;n=", b'5;n="open', b"5 x", b"5 ", b"5;n=a b",
                                  b"5;n=\"\x01\"", b"5;n\"", b"5;n=v;", b"5,n"])
def test_chunk_extensions_rejected(P, line):
    assert_chunk_error(P, line + b"\r\nhello\r\n0\r\n\r\n", 400, "invalid chunk extension")


def test_chunked_trailers(P):
    data = b"3\r\nabc\r\n0\r\nX-Sum: abc\r\nOTHER:  v \t\r\nx-e:\r\n\r\n"
    dec, pos = decode(P, data)
    assert dec.done and pos == len(data) and dec.body() == b"abc"
    assert dec.trailers == [("x-sum", "abc"), ("other", "v"), ("x-e", "")]


@pytest.mark.parametrize("line, status, message", [
    (b" folded", 400, "obsolete line folding is not allowed"),
    (b"Bad Name: v", 400, "invalid header field name"),
    (b"NoColon", 400, "header field without a name or colon"),
    (b"X: a\x00", 400, "invalid character in header field value"),
    (b"X: a\rb", 400, "bare CR or LF in chunked trailer"),
    (b"X: a\nb", 400, "bare CR or LF in chunked trailer"),
])
def test_chunked_bad_trailer(P, line, status, message):
    assert_chunk_error(P, b"0\r\n" + line + b"\r\n\r\n", status, message)


@pytest.mark.parametrize("size_hex, n", [(b"A", 10), (b"a", 10), (b"000a", 10), (b"0000000000000010", 16),
                                         (b"1F", 31)])
def test_chunk_sizes(P, size_hex, n):
    data = size_hex + b"\r\n" + b"z" * n + b"\r\n0\r\n\r\n"
    dec, pos = decode(P, data)
    assert dec.done and dec.body() == b"z" * n and dec.size == n and pos == len(data)


@pytest.mark.parametrize("line, message", [
    (b"g", "invalid chunk size"),
    (b"-5", "invalid chunk size"),
    (b"", "invalid chunk size"),
    (b" 5", "invalid chunk size"),
    (b"+5", "invalid chunk size"),
    (b"0x5", "invalid chunk extension"),
    (b"00000000000000001", "chunk size too large"),
    (b"fffffffffffffffff", "chunk size too large"),
])
def test_bad_chunk_size(P, line, message):
    assert_chunk_error(P, line + b"\r\nhello\r\n0\r\n\r\n", 400, message)


def test_huge_declared_chunk_is_413(P):
    assert_chunk_error(P, b"ffffffffffffffff\r\n", 413, "request body too large")
    dec = P.ChunkedDecoder(1 << 70)  # a limit past 64 bits still counts exactly
    dec.feed(b"ffffffffffffffff\r\nab")
    assert dec.size == 0xffffffffffffffff and dec.body() == b"ab" and not dec.done


def test_chunk_data_longer_than_declared(P):
    assert_chunk_error(P, b"3\r\nhello\r\n0\r\n\r\n", 400, "chunk data longer than its declared size")
    assert_chunk_error(P, b"3\r\nabcX", 400, "chunk data longer than its declared size")
    assert_chunk_error(P, b"3\r\nabc\rX", 400, "chunk data longer than its declared size")
    dec, pos = decode(P, b"3\r\nabc\r")
    assert pos == 6 and not dec.done


def test_chunked_body_limit_checked_before_the_data(P):
    # the size line alone is enough to refuse
    assert_chunk_error(P, b"b\r\n", 413, "request body too large", max_body=10)
    assert_chunk_error(P, b"6\r\nabcdef\r\n6\r\n", 413, "request body too large", max_body=10)
    dec, _ = decode(P, b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n", max_body=10)
    assert dec.done and dec.size == 10


def test_chunk_size_line_too_long(P):
    assert_chunk_error(P, b"5;" + b"a" * 4100, 400, "chunk size line too long")
    dec, pos = decode(P, b"5;" + b"a" * 4000)
    assert pos == 0 and not dec.done


def test_trailer_section_too_large(P):
    assert_chunk_error(P, b"0\r\nX: " + b"v" * 40 + b"\r\n\r\n", 431, "chunked trailer section too large",
                       max_trailer=20)
    assert_chunk_error(P, b"0\r\nX: " + b"v" * 40, 431, "chunked trailer section too large",
                       max_trailer=20)
    dec, _ = decode(P, b"0\r\nX: vvvv\r\n\r\n", max_trailer=11)
    assert dec.done and dec.trailers == [("x", "vvvv")]


# the limits a 32-bit Py_ssize_t holds, and 64-bit's, at and past their ends
LIMITS = [2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64]


@pytest.mark.parametrize("limit", LIMITS)
def test_trailer_limits_of_any_size(P, limit):
    """Any int is a limit, as in parser_py (a position plus the limit once wrapped around, so
    the last trailer line was never found, or the limit did not fit a C integer)."""
    data = b"3\r\nabc\r\n0\r\nX: v\r\n\r\n"
    dec, pos = decode(P, data, max_trailer=limit, max_fields=limit)
    assert (dec.done, pos, dec.body(), dec.trailers) == (True, len(data), b"abc", [("x", "v")])
    assert (dec.max_trailer, dec.max_fields) == (limit, limit)
    dec, pos = decode(P, data[:-2], max_trailer=limit)  # the blank line still to come
    assert (dec.done, pos, dec.trailer_bytes) == (False, len(data) - 2, 6)


def test_too_many_trailers(P):
    data = b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert_chunk_error(P, data, 431, "too many trailer fields", max_fields=2)
    dec, _ = decode(P, data, max_fields=3)
    assert [n for n, _ in dec.trailers] == ["a", "b", "c"]


@pytest.mark.parametrize("data", [SIMPLE, b"3;x=\"y\"\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\n"])
def test_chunked_one_byte_at_a_time(P, data):
    whole, _ = decode(P, data)
    dec = P.ChunkedDecoder(1 << 20)
    buf = b""
    pos = 0
    for i in range(len(data)):
        buf += data[i:i + 1]
        pos = dec.feed(buf, pos)
    assert dec.done and pos == len(data)
    assert (dec.body(), dec.trailers, dec.size) == (whole.body(), whole.trailers, whole.size)


def test_chunked_leaves_the_next_request_alone(P):
    data = SIMPLE + b"GET / HTTP/1.1\r\n"
    dec, pos = decode(P, data)
    assert dec.done and pos == len(SIMPLE)
    assert dec.feed(data, pos) == pos  # done: consumes nothing more
    dec = P.ChunkedDecoder(100)
    assert dec.feed(b"junk" + SIMPLE + b"\r\n", 4) == 4 + len(SIMPLE)


def test_chunked_accepts_bytearray(P):
    dec = P.ChunkedDecoder(100)
    assert dec.feed(bytearray(SIMPLE)) == len(SIMPLE) and dec.body() == b"hello world"


# ---------------------------------------------------------------- parse_query, unquote_path

@pytest.mark.parametrize("query, pairs", [
    ("", []),
    ("a=1&b=x+y&b=%E2%9C%93", [("a", "1"), ("b", "x y"), ("b", "\u2713")]),
    ("%2B=%2b+", [("+", "+ ")]),
    ("a=%zz&b=%4&c=%&d=%%41", [("a", "%zz"), ("b", "%4"), ("c", "%"), ("d", "%A")]),
    # bytes that are not UTF-8 stay visible as upper-case %XX escapes (as Flask shows them)
    ("a=%FF&b=%E2%9C&c=%C3%A9&d=%ff%41", [("a", "%FF"), ("b", "%E2%9C"), ("c", "\xe9"), ("d", "%FFA")]),
    ("a=%C3%A9%FFx", [("a", "\xe9%FFx")]),
    ("&&a=1&&b=2&", [("a", "1"), ("b", "2")]),
    ("flag&x=&=y&=", [("flag", ""), ("x", ""), ("", "y"), ("", "")]),
    ("k=1&k=2&j=0&k=3", [("k", "1"), ("k", "2"), ("j", "0"), ("k", "3")]),
    ("a=b=c", [("a", "b=c")]),
    ("q=caf\xc3\xa9", [("q", "caf\xe9")]),
    ("caf\xc3\xa9=\xff", [("caf\xe9", "%FF")]),
    ("k=\xe9+x", [("k", "%E9 x")]),
    ("q=caf\xc3\xa9%20x+y", [("q", "caf\xe9 x y")]),
    ("%C3%A9\xc3\xa9=1", [("\xe9\xe9", "1")]),
    ("a%3Db=c%26d", [("a=b", "c&d")]),
])
def test_parse_query(P, query, pairs):
    assert P.parse_query(query) == pairs
    assert all(type(k) is str and type(v) is str for k, v in P.parse_query(query))


@pytest.mark.parametrize("path, expected", [
    ("/", "/"),
    ("/plain/path", "/plain/path"),
    ("/a%20b", "/a b"),
    ("/a+b", "/a+b"),
    ("/%2F%2f", "///"),
    ("/%zz%4%", "/%zz%4%"),
    ("/%FF", "/\ufffd"),
    ("/caf%C3%A9", "/caf\xe9"),
    ("/caf\xc3\xa9", "/caf\xe9"),
    ("/caf\xc3\xa9%20x", "/caf\xe9 x"),
    ("/\xff", "/\ufffd"),
])
def test_unquote_path(P, path, expected):
    assert P.unquote_path(path) == expected


def test_unquote_path_with_wide_text_is_refused_alike(P):
    with pytest.raises(UnicodeEncodeError):
        P.unquote_path("/\u2713%20")
    with pytest.raises(UnicodeEncodeError):
        P.parse_query("a=\u2713")


def test_chunked_take_hands_out_each_decoded_piece_once(P):
    decoder = P.ChunkedDecoder(10 ** 9)
    assert decoder.take() == b""
    pos = decoder.feed(b"5\r\nhello\r\n3\r\nab")
    assert decoder.take() == b"helloab"
    assert decoder.take() == b""
    decoder.feed(b"c\r\n0\r\nX-T: 1\r\n\r\n")
    assert decoder.done and decoder.take() == b"c"
    assert decoder.trailers == [("x-t", "1")]
    assert pos == 15


TEXT_FIELDS = ("method", "target", "path", "query", "content_type", "accept", "origin",
               "request_id", "user_agent")


def test_text_fields_read_and_assign_alike(P):
    head = P.parse_head(b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
                        b"Accept: */*\r\nOrigin: http://o\r\nX-Request-Id: r1\r\n"
                        b"User-Agent: ua\r\n\r\n", 0)
    assert [getattr(head, name) for name in TEXT_FIELDS] == [
        "POST", "/p?q=1", "/p", "q=1", "text/plain", "*/*", "http://o", "r1", "ua"]
    for name in TEXT_FIELDS:
        setattr(head, name, name.upper())
        assert getattr(head, name) == name.upper()
        setattr(head, name, None)
        assert getattr(head, name) is None


def test_compiled_text_fields_are_slots_that_cannot_be_deleted():
    """The compiled head's text fields are member descriptors (CPython reads them at an offset,
    as it does a __slots__ class's), and deleting one is refused: C code reads them as objects."""
    C = PARSER.get()
    head = C.parse_head(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 0)
    for name in TEXT_FIELDS:
        assert type(C.RequestHead.__dict__[name]).__name__ == "member_descriptor"
        with pytest.raises(AttributeError, match="cannot be deleted"):
            delattr(head, name)
    assert (head.method, head.target, repr(head)) == ("GET", "/", "<RequestHead GET / HTTP/1.1>")


def test_a_compiled_text_field_unset_past_delattr_reads_as_none_in_c():
    """The member descriptor's own __delete__ goes past RequestHead.__delattr__ and leaves the
    field unset (NULL): Python code gets AttributeError, as from an unset __slots__ field; the
    C code that reads the head (its repr, the access lines) takes it for None, never reads NULL."""
    C = PARSER.get()
    head = C.parse_head(b"GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: ua\r\n\r\n", 0)
    for name in ("method", "target", "request_id", "user_agent"):
        C.RequestHead.__dict__[name].__delete__(head)
        with pytest.raises(AttributeError):
            getattr(head, name)
    assert repr(head) == "<RequestHead None None HTTP/1.1>"
    for twin in (copy.copy(head), pickle.loads(pickle.dumps(head))):
        assert (twin.method, twin.target, twin.path, twin.request_id) == (None, None, "/x", None)
    record = ("-", head, 200, 0.001, None, 0)
    assert b'"None None HTTP/1.1" 200 1.00ms' in C.access_text_lines([record], "")
    assert b'"method":null,"path":null' in C.access_json_lines([record], "{", lambda v: b"0")


ALL_FIELDS = TEXT_FIELDS + ("version", "end", "content_length", "chunked", "keep_alive",
                            "expect_continue", "fields")


@pytest.mark.parametrize("raw", [
    # chunked, keep_alive, expect_continue: each a different pattern, so that no two can be swapped
    b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nAccept: */*\r\n"
    b"Expect: 100-continue\r\nConnection: close\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    b"Origin: http://o\r\nX-Request-Id: r\r\n\r\n",
    b"GET /g HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\nUser-Agent: ua\r\n\r\n",
])
def test_a_head_copies_and_pickles_whole(P, raw):
    head = P.parse_head(raw, 0)
    for twin in (copy.copy(head), copy.deepcopy(head), pickle.loads(pickle.dumps(head))):
        assert type(twin) is type(head)
        assert [getattr(twin, name) for name in ALL_FIELDS] == [
            getattr(head, name) for name in ALL_FIELDS]
