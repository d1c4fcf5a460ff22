"""Differential property tests: parser_c must agree with parser_py on every input.

Requests come from a corpus of valid heads and from a small grammar, then
get mutated (byte flips, inserted CR/LF/NUL/SP/colon/HTAB..., digit changes
in Content-Length and chunk sizes, duplicated and dropped lines). Both
parsers get the same bytes, whole and cut at random points, and must give
the same result: the same attributes (values and types) or the same
ParseError (status and message).

The default run stays well under a minute; LITE_SERVING_FUZZ_EXAMPLES=N runs
N examples per test instead (e.g. 50000 for a long session).
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lite_serving.http import parser_py
from support.parser_twins import decoder_run, head_outcome, outcome

parser_c = pytest.importorskip(
    "lite_serving.http.parser_c",
    reason="lite_serving.http.parser_c is not built; run: python setup.py build_ext --inplace")

_EXAMPLES = int(os.environ.get("LITE_SERVING_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(default):
    return settings(max_examples=_EXAMPLES or default, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- inputs

CORPUS = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
    b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n",
    b"POST /predict?x=1&y=%20 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
    b"Expect: 100-continue\r\nOrigin: http://a.example\r\n\r\n",
    b"GET http://h:80/p?q HTTP/1.0\r\nConnection: Keep-Alive\r\nAccept: a\r\nAccept: b\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\nAccess-Control-Request-Method: POST\r\n"
    b"Origin: https://x\r\n\r\n",
    b"\r\nDELETE /a/b HTTP/1.1\r\nhost: h\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    b"PUT https://h?only HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"PATCH /x HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\ncontent-type: b\r\nX-Empty:\r\n"
    b"X-Tab:\tv\t\r\n\r\n",
]

SPECIAL = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\x00", b" ", b"\t", b":", b",", b";", b"=", b'"',
           b"\x7f", b"\x80", b"\xff", b"?", b"/", b"*", b"%", b"0", b"9", b"-", b"+", b"a", b"A",
           b"\x0b", b"\x1b"]

NAMES = [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect", b"Accept",
         b"Content-Type", b"Origin", b"X-Custom", b"content-length", b"TRANSFER-ENCODING", b"host"]
VALUES = [b"h", b"", b" ", b"chunked", b"gzip, chunked", b"chunked, gzip", b"chunked, chunked",
          b"Chunked", b"close", b"keep-alive", b"Keep-Alive, close", b"100-continue",
          b"100-Continue", b"teapot", b"0", b"45", b"007", b"+5", b"-1", b"0x1f", b"1 2", b"1,2",
          b"9" * 18, b"9" * 19, b"application/json", b"*/*", b"caf\xc3\xa9", b"\tv\t", b"a\x00b",
          b"identity", b"ch@nked", b" , chunked"]
METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"PATCH", b"get", b"M-SEARCH",
           b"", b"G@T", b"X" * 20]
TARGETS = [b"/", b"/p", b"/p?q", b"/a/b?x=1&y=2", b"*", b"http://h", b"http://h/p?q", b"http://h?x",
           b"HTTPS://H/", b"http://", b"http:///p", b"ftp://h/", b"p", b"/" + b"a" * 60, b"/%41",
           b"/?", b""]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/1.x", b"http/1.1", b"HTTP/11",
            b"HTTP/1.1 ", b"HTTP/0.9"]


def mostly(valid, invalid):
    """Pick from ``valid`` four times out of five, else from ``invalid``."""
    return st.one_of(*[st.sampled_from(valid)] * 4, st.sampled_from(invalid))


@st.composite
def grammar_heads(draw):
    request_line = b" ".join([draw(mostly(METHODS[:7], METHODS)), draw(mostly(TARGETS[:4], TARGETS)),
                              draw(mostly(VERSIONS[:2], VERSIONS))])
    lines = [request_line]
    if draw(st.integers(0, 3)):
        lines.append(b"Host: h")
    for _ in range(draw(st.integers(0, 7))):
        name = draw(st.sampled_from(NAMES))
        ows1 = draw(st.sampled_from([b"", b" ", b"  ", b"\t"]))
        ows2 = draw(st.sampled_from([b"", b" ", b"\t "]))
        lines.append(name + b":" + ows1 + draw(st.sampled_from(VALUES)) + ows2)
    if draw(st.booleans()):
        k = draw(st.integers(1, len(lines)))
        lines[k:k] = [b"X-Pad-%d: v" % i for i in range(draw(st.integers(0, 14)))]
    lead = draw(st.sampled_from([b"", b"", b"\r\n", b"\r\n\r\n"]))
    return lead + b"\r\n".join(lines) + b"\r\n\r\n"


def _digit_runs(data):
    runs, i = [], 0
    while i < len(data):
        if 0x30 <= data[i] <= 0x39 or 0x41 <= data[i] <= 0x46 or 0x61 <= data[i] <= 0x66:
            j = i
            while j < len(data) and (0x30 <= data[j] <= 0x39 or 0x41 <= data[j] <= 0x46
                                     or 0x61 <= data[j] <= 0x66):
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


@st.composite
def mutated(draw, base):
    """Apply a few random mutations to the bytes drawn from ``base``."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "special", "insert", "delete", "digits", "dup", "drop",
                                     "case"]))
        n = len(data)
        if kind == "flip" and n:
            data[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        elif kind == "special" and n:
            i = draw(st.integers(0, n - 1))
            data[i:i + 1] = draw(st.sampled_from(SPECIAL))
        elif kind == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.sampled_from(SPECIAL))
        elif kind == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 4))]
        elif kind == "digits":
            runs = _digit_runs(data)
            if runs:
                i, j = draw(st.sampled_from(runs))
                data[i:j] = draw(st.sampled_from([b"0", b"1", b"00", b"ffff", b"F", b"9" * 17,
                                                  b"1" * 19, b"", b"-1", b"0x5", b"1 1", b"12"]))
        elif kind in ("dup", "drop"):
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                k = draw(st.integers(1, len(lines) - 1))
                if kind == "dup":
                    lines.insert(draw(st.integers(1, len(lines) - 1)), lines[k])
                else:
                    del lines[k]
                data = bytearray(b"\r\n".join(lines))
        elif kind == "case" and n:
            i = draw(st.integers(0, n - 1))
            data[i:i + 1] = bytes(data[i:i + 1]).swapcase()
    return bytes(data)


LIMITS = st.one_of(
    st.just(()),
    st.tuples(st.one_of(st.just(parser_py.MAX_HEAD), st.integers(0, 400)),
              st.one_of(st.just(parser_py.MAX_HEADERS), st.integers(0, 12)),
              st.one_of(st.just(parser_py.MAX_TARGET), st.integers(0, 80))),
)

HEADS = st.one_of(mutated(st.sampled_from(CORPUS)), mutated(grammar_heads()), grammar_heads())


def check_head(data, limits, start=0):
    args = (start, *limits) if limits else ((start,) if start else ())
    expected = head_outcome(parser_py, data, *args)
    assert head_outcome(parser_c, data, *args) == expected, data
    assert head_outcome(parser_c, bytearray(data), *args) == expected, data
    return expected


# ---------------------------------------------------------------- parse_head

@pytest.mark.slow
@fuzz_settings(1500)
@given(data=HEADS, limits=LIMITS)
def test_parse_head_whole(data, limits):
    check_head(data, limits)


@pytest.mark.slow
@fuzz_settings(600)
@given(data=HEADS, limits=LIMITS, cuts=st.lists(st.integers(0, 400), max_size=6))
def test_parse_head_split(data, limits, cuts):
    """Prefixes, as the server sees a head arriving in pieces."""
    whole = check_head(data, limits)
    for cut in sorted(set(min(c, len(data)) for c in cuts)):
        got = check_head(data[:cut], limits)
        if isinstance(whole, dict) and cut < whole["end"][1]:
            assert got is None or got[0] == "error"


@fuzz_settings(400)
@given(data=HEADS, junk=st.binary(max_size=20), tail=st.sampled_from([b"", b"GET / HT", b"\r\n", CORPUS[0]]))
def test_parse_head_offset_and_pipelining(data, junk, tail):
    check_head(junk + data + tail, (), start=len(junk))


@fuzz_settings(200)
@given(data=st.binary(max_size=300))
def test_parse_head_random_bytes(data):
    check_head(data, ())
    check_head(b"GET / HTTP/1.1\r\n" + data + b"\r\n\r\n", ())


# ---------------------------------------------------------------- ChunkedDecoder

@st.composite
def chunked_bodies(draw):
    out = []
    for _ in range(draw(st.integers(0, 4))):
        chunk = draw(st.binary(min_size=1, max_size=40))
        size = draw(st.sampled_from(["%x", "%X", "%04x", "%016x"])) % len(chunk)
        ext = draw(st.one_of(st.just(b""), mostly([b";a=b", b' ; n = "q\\"s"', b";x", b"\t;y=z"],
                                                   [b";", b"; =", b" ", b";a=\x01"])))
        out.append(size.encode() + ext + b"\r\n" + chunk + b"\r\n")
    out.append(b"0" + draw(st.sampled_from([b"", b";last"])) + b"\r\n")
    for _ in range(draw(st.integers(0, 3))):
        out.append(draw(st.sampled_from(NAMES)) + b":" + draw(st.sampled_from(VALUES)) + b"\r\n")
    out.append(b"\r\n")
    out.append(draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"\r\n"])))
    return b"".join(out)


CHUNK_LIMITS = st.one_of(
    st.just((1 << 20,)),
    st.tuples(st.one_of(st.just(1 << 20), st.integers(0, 120)),
              st.one_of(st.just(parser_py.MAX_HEAD), st.integers(0, 60)),
              st.one_of(st.just(parser_py.MAX_HEADERS), st.integers(0, 4))),
)


def split_at(data, cuts):
    points = sorted(set(min(c, len(data)) for c in cuts))
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@pytest.mark.slow
@fuzz_settings(1200)
@given(data=st.one_of(chunked_bodies(), mutated(chunked_bodies())), limits=CHUNK_LIMITS,
       cuts=st.lists(st.integers(0, 300), max_size=8))
def test_chunked_decoder(data, limits, cuts):
    expected = decoder_run(parser_py, [data], limits)
    assert decoder_run(parser_c, [data], limits) == expected, data
    pieces = split_at(data, cuts)
    assert decoder_run(parser_c, pieces, limits) == decoder_run(parser_py, pieces, limits), pieces


@fuzz_settings(150)
@given(data=chunked_bodies())
def test_chunked_decoder_byte_by_byte(data):
    pieces = [data[i:i + 1] for i in range(len(data))]
    whole = decoder_run(parser_py, [data], (1 << 20,))
    got = decoder_run(parser_c, pieces, (1 << 20,))
    assert got == decoder_run(parser_py, pieces, (1 << 20,))
    assert got[1] == whole[1]


# ---------------------------------------------------------------- parse_query, unquote_path

QUERY_TEXT = st.text(alphabet=st.one_of(st.sampled_from(list("%+&=aAfF09zZ/?#;")),
                                        st.characters(max_codepoint=0xFF)), max_size=60)


@fuzz_settings(1500)
@given(text=QUERY_TEXT)
def test_parse_query_and_unquote_path(text):
    assert outcome(parser_c.parse_query, text) == outcome(parser_py.parse_query, text), text
    assert outcome(parser_c.unquote_path, text) == outcome(parser_py.unquote_path, text), text


@fuzz_settings(200)
@given(text=st.text(max_size=20))
def test_parse_query_any_text(text):
    assert outcome(parser_c.parse_query, text) == outcome(parser_py.parse_query, text), text
    assert outcome(parser_c.unquote_path, text) == outcome(parser_py.unquote_path, text), text
