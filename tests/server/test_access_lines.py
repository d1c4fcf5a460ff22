"""Access lines: the compiled twins in parser_c give the text of server/access_log.py's rules.

``access_log.text_lines`` and ``access_log.json_lines`` (``text_line`` and
``json_tail`` for each record) are the readable rules; ``parser_c.access_text_lines``
and ``parser_c.access_json_lines`` make the same lines from the head's C fields
(one line per request is written at the default settings), as the UTF-8 bytes
that go to the stream. Heads come from each parser, so the
compiled twins are checked against heads of both; arbitrary text (control
characters, non-ASCII, surrogates) comes in through heads of no parser.
"""

import json
import math
import types

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lite_serving.http import parser_py
from lite_serving.server import access_log
from support.compiled import PARSER

compiled_or_skip = PARSER.get

dumps = orjson.dumps

token = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+-.^_`|~", min_size=1, max_size=8)
target = st.text(alphabet="abcXYZ019/-._~!$&'()*+,;=:@%?", min_size=0, max_size=30).map(
    lambda t: "/" + t)
# field values a client may send: visible ASCII, spaces, tabs, latin-1 beyond ASCII
field_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                             blacklist_characters="\x7f"),
                      min_size=1, max_size=40).map(str.strip).filter(bool)
reason = st.none() | st.text(max_size=40)
# any text at all: control characters, non-ASCII, lone surrogates
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
START = '{"time":"2026-12-07T11:55:27.123Z","level":"INFO","logger":"lite_serving.access","pid":7,'


TEXT_START = "2026-12-07 11:55:27,123 INFO lite_serving.access[7]: "


def json_line(C, record):
    """The compiled twin's JSON line of ``record``, checked against the rules' byte for byte."""
    data = C.access_json_lines([record], START, dumps)
    assert data == access_log.json_lines([record], START, dumps)
    return data


def text_line(C, record):
    """The compiled twin's text line of ``record`` (as text, without its start and newline),
    checked against the rules' byte for byte."""
    data = C.access_text_lines([record], TEXT_START)
    assert data == access_log.text_lines([record], TEXT_START)
    assert data.startswith(TEXT_START.encode()) and data.endswith(b"\n")
    return data[len(TEXT_START):-1].decode()


def build_head(P, method, path, agent, request_id, length, chunked):
    fields = b"Host: h\r\n"
    if agent is not None:
        fields += b"User-Agent: " + agent.encode("latin-1") + b"\r\n"
    if request_id is not None:
        fields += b"X-Request-Id: " + request_id.encode("latin-1") + b"\r\n"
    if chunked:
        fields += b"Transfer-Encoding: chunked\r\n"
    elif length is not None:
        fields += b"Content-Length: %d\r\n" % length
    return P.parse_head(f"{method} {path} HTTP/1.1\r\n".encode() + fields + b"\r\n", 0)


@pytest.fixture(params=["py", "c"])
def P(request):
    """The parser whose heads the lines are made of."""
    return parser_py if request.param == "py" else compiled_or_skip()


@pytest.mark.parametrize("which", ["py", "c"])
@settings(max_examples=300, deadline=None)
@given(method=token, path=target, agent=st.none() | field_value,
       request_id=st.none() | field_value, length=st.none() | st.integers(0, 10**18 - 1),
       chunked=st.booleans(), status=st.integers(100, 599),
       seconds=st.floats(0, 1e6), reason=reason, sent=st.integers(0, 2**62),
       client=st.sampled_from(["127.0.0.1:5000", "[::1]:80", "unix", "-"]))
def test_compiled_lines_match_the_rules(which, method, path, agent, request_id, length, chunked,
                                         status, seconds, reason, sent, client):
    C = compiled_or_skip()
    head = build_head(parser_py if which == "py" else C, method, path, agent, request_id, length,
                      chunked)
    record = (client, head, status, seconds, reason, sent)
    assert text_line(C, record) == access_log.text_line(record)
    assert orjson.loads(json_line(C, record))["request_id"] == head.request_id


@settings(max_examples=100, deadline=None)
@given(status=st.integers(100, 599), seconds=st.floats(0, 1e6), reason=reason,
       sent=st.integers(0, 2**62))
def test_compiled_lines_of_a_refusal_before_any_request_line(status, seconds, reason, sent):
    C = compiled_or_skip()
    record = ("10.0.0.1:1", None, status, seconds, reason, sent)
    assert text_line(C, record) == access_log.text_line(record)
    json_line(C, record)


def durations_at_ties():
    """Seconds whose milliseconds lie on, or next to, a tie of the text line's 2 decimals or
    the JSON line's 3 (where rounding in integers and rounding the exact value could differ),
    at every magnitude the lines write in integers, and past it."""
    out = [0.0, -0.0, 5e-324, 1e-9, 1e6 - 1e-10, 1e6, 1e9 - 1, 1e9, 1e12, 2.0 ** 63, 2.0 ** 64]
    for whole in (0, 1, 2, 7, 99, 1234, 10**5, 10**7, 10**8 + 3):
        for frac in range(0, 1000, 37):
            for tie in (frac / 1000 + 0.0005, frac / 100 + 0.005):
                ms = whole + tie
                for x in (math.nextafter(ms, 0), ms, math.nextafter(ms, math.inf)):
                    out.append(x / 1000)
    return out


@pytest.mark.parametrize("which", ["py", "c"])
def test_durations_next_to_a_tie_are_rounded_as_the_rules_round_them(which):
    C = compiled_or_skip()
    head = build_head(parser_py if which == "py" else C, "GET", "/", None, None, None, False)
    for seconds in durations_at_ties():
        for record in (("-", head, 200, seconds, None, 0), ("-", None, 400, seconds, None, 0)):
            text = text_line(C, record)   # both asserted equal to the rules' byte for byte
            data = json_line(C, record)
            if 0 <= seconds < 1e9:
                assert f"{seconds * 1000:.2f}ms" in text
                assert orjson.loads(b"{" + data[len(START):])["duration_ms"] == round(
                    seconds * 1000, 3)


def test_lines_of_a_typical_request_and_of_edges(P):
    C = compiled_or_skip()
    head = build_head(P, "POST", "/predict?x=1", 'curl/8 "quoted" \\', "abc", 12, False)
    record = ("127.0.0.1:5000", head, 413, 0.000123, 'body over --max-body-size 10 "x"\n', 0)
    text = text_line(C, record)
    assert text == access_log.text_line(record)
    assert text.startswith('127.0.0.1:5000 - "POST /predict?x=1 HTTP/1.1" 413 0.12ms 12 0 abc ')
    line = orjson.loads(b"{" + json_line(C, record)[len(START):])
    assert line == {"message": 'POST /predict?x=1 413 -- body over --max-body-size 10 "x"\n',
                    "method": "POST", "path": "/predict?x=1", "status": 413,
                    "duration_ms": 0.123, "bytes_in": 12, "bytes_out": 0,
                    "client": "127.0.0.1:5000", "request_id": "abc",
                    "user_agent": 'curl/8 "quoted" \\',
                    "reason": 'body over --max-body-size 10 "x"\n'}
    chunked = build_head(P, "PUT", "/", None, None, None, True)
    record = ("c", chunked, 200, 2.0, None, 2**63 + 1)   # a count past 64 bits still prints
    assert text_line(C, record) == access_log.text_line(record)
    assert b'"bytes_in":null' in json_line(C, record)
    assert json_line(C, record).endswith(f',"bytes_out":{2**63 + 1},"client":"c",'
                                         '"request_id":null,"user_agent":null,'
                                         '"reason":null}\n'.encode())


def fake_head(method, target, agent, request_id, length=-1, chunked=False):
    """A head of no parser: its fields may hold any text (a parser's hold latin-1 at most)."""
    return types.SimpleNamespace(method=method, target=target, version=1, user_agent=agent,
                                 request_id=request_id, content_length=length, chunked=chunked)


@settings(max_examples=300, deadline=None)
@given(method=any_text, target=any_text, agent=st.none() | any_text,
       request_id=st.none() | any_text, reason=st.none() | any_text, client=any_text,
       seconds=st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1e9),
       sent=st.integers(-2**70, 2**70))
def test_json_lines_of_any_text_match_and_read_back(method, target, agent, request_id, reason,
                                                    client, seconds, sent):
    C = compiled_or_skip()
    record = (client, fake_head(method, target, agent, request_id), 200, seconds, reason, sent)
    data = json_line(C, record)
    # valid UTF-8, one line; read back (the json module takes a surrogate's \uXXXX escape
    # back to that surrogate), it gives every field as it was
    text = data.decode()
    assert text.count("\n") == 1 and text.endswith("\n")
    obj = json.loads(text)
    assert (obj["method"], obj["path"], obj["user_agent"], obj["request_id"], obj["client"],
            obj["reason"], obj["bytes_out"]) == (method, target, agent, request_id, client,
                                                 reason, sent)
    assert obj["message"] == f"{method} {target} 200" + (" -- " + reason if reason else "")
    # the text line: as the rules make it, written as stderr writes text (UTF-8, a surrogate
    # as its backslash escape)
    assert text_line(C, record) == access_log.text_line(record).encode(
        "utf-8", "backslashreplace").decode()


def test_text_lines_write_text_as_stderr_does():
    C = compiled_or_skip()
    agent = 'caf\xe9 "q" \\ \t\x01 \u20ac\U0001f600'
    record = ("c", fake_head("GET", "/", agent, None), 200, 0.001, "r\udcff\ud800", 0)
    text = text_line(C, record)
    assert text.endswith(' "caf\xe9 \\"q\\" \\ \t\x01 \u20ac\U0001f600" -- r\\udcff\\ud800')


def test_json_escapes_as_orjson_writes_them_and_surrogates_as_their_escape():
    C = compiled_or_skip()
    every = "".join(map(chr, range(0x80))) + "\xe9\u20ac\U0001f600\ud800\udcff\udfff\uffff"
    record = ("c", fake_head("GET", "/", every, None), 200, 0.001, None, 0)
    data = json_line(C, record)
    escaped = orjson.dumps(every.replace("\ud800", "").replace("\udcff", "").replace(
        "\udfff", "")).replace(b"\xef\xbf\xbf", b"\\ud800\\udcff\\udfff\xef\xbf\xbf")
    assert b',"user_agent":' + escaped + b',' in data
    assert b"\\u001f" in data and b"\\b\\t\\n\\u000b\\f\\r" in data and b"\x7f" in data


@pytest.mark.parametrize("size", [4095, 4096, 4097, 100_003])
def test_lines_of_long_fields(size):
    """Text longer than the slices the compiled twin reserves room for, escapes across their
    edges."""
    C = compiled_or_skip()
    agent = ("a\"\x01\xe9\u20ac\U0001f600\udc80" * (size // 7 + 1))[:size]
    record = ("c", fake_head("GET", "/" + "p" * size, agent, "r" * size), 200, 0.5, agent, size)
    obj = json.loads(json_line(C, record))
    assert obj["user_agent"] == obj["reason"] == agent and obj["path"] == "/" + "p" * size
    assert text_line(C, record).endswith(" -- " + agent.replace("\udc80", "\\udc80"))


def test_lines_of_many_records_in_one_write():
    C = compiled_or_skip()
    head = build_head(C, "POST", "/", "ua/1", None, 12, False)
    records = [(f"10.0.0.{i % 256}:{i}", head, 200 + i % 300, i / 1e5, "r" * (i % 3), i)
               for i in range(20_000)]
    data = C.access_json_lines(records, START, dumps)
    assert data == access_log.json_lines(records, START, dumps)
    assert data.count(b"\n") == len(records)
    data = C.access_text_lines(records, TEXT_START)
    assert data == access_log.text_lines(records, TEXT_START)
    assert data.count(b"\n") == len(records)


def test_a_record_that_is_not_one_is_refused_by_both_twins():
    C = compiled_or_skip()
    for bad in (None, ("c", None, 200)):
        with pytest.raises((TypeError, ValueError)):
            access_log.json_lines([bad], START, dumps)
        with pytest.raises(TypeError):
            C.access_json_lines([bad], START, dumps)
        with pytest.raises((TypeError, ValueError)):
            access_log.text_lines([bad], TEXT_START)
        with pytest.raises(TypeError):
            C.access_text_lines([bad], TEXT_START)
