"""Access lines: the compiled twins in parser_c give the text of server/access_log.py's rules.

``access_log.text_line`` and ``access_log.json_tail`` are the readable rules;
``parser_c.access_text`` and ``parser_c.access_json`` format the same lines from
the head's C fields (one line per request is written at the default settings).
Heads come from each parser, so the compiled twins are checked against heads
of both.
"""

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
    assert C.access_text(record) == access_log.text_line(record)
    assert C.access_json(record, dumps) == access_log.json_tail(record, dumps)
    assert orjson.loads("{" + C.access_json(record, dumps))["request_id"] == head.request_id


@settings(max_examples=100, deadline=None)
@given(status=st.integers(100, 599), seconds=st.floats(0, 1e6), reason=reason,
       sent=st.integers(0, 2**62))
def test_compiled_lines_of_a_refusal_before_any_request_line(status, seconds, reason, sent):
    C = compiled_or_skip()
    record = ("10.0.0.1:1", None, status, seconds, reason, sent)
    assert C.access_text(record) == access_log.text_line(record)
    assert C.access_json(record, dumps) == access_log.json_tail(record, dumps)


def test_lines_of_a_typical_request_and_of_edges(P):
    C = compiled_or_skip()
    head = build_head(P, "POST", "/predict?x=1", 'curl/8 "quoted" \\', "abc", 12, False)
    record = ("127.0.0.1:5000", head, 413, 0.000123, 'body over --max-body-size 10 "x"\n', 0)
    text = C.access_text(record)
    assert text == access_log.text_line(record)
    assert text.startswith('127.0.0.1:5000 - "POST /predict?x=1 HTTP/1.1" 413 0.12ms 12 0 abc ')
    line = orjson.loads("{" + C.access_json(record, dumps))
    assert line == {"message": 'POST /predict?x=1 413 -- body over --max-body-size 10 "x"\n',
                    "method": "POST", "path": "/predict?x=1", "status": 413,
                    "duration_ms": 0.123, "bytes_in": 12, "bytes_out": 0,
                    "client": "127.0.0.1:5000", "request_id": "abc",
                    "user_agent": 'curl/8 "quoted" \\',
                    "reason": 'body over --max-body-size 10 "x"\n'}
    chunked = build_head(P, "PUT", "/", None, None, None, True)
    record = ("c", chunked, 200, 2.0, None, 2**63 + 1)   # a count past 64 bits still prints
    assert C.access_text(record) == access_log.text_line(record)
    assert '"bytes_in":null' in C.access_json(record, dumps)
    assert C.access_json(record, dumps).endswith(f',"bytes_out":{2**63 + 1},"client":"c",'
                                                  '"request_id":null,"user_agent":null,'
                                                  '"reason":null}')
