"""The compiled plain-JSON codec (``lite_serving.codecs.json_c``) against orjson, which it stands in for.

Until orjson is loaded, answers and request bodies made of plain values go
through json_c: every document it reads must give orjson's objects, every
value it writes orjson's bytes, and everything else must be left to orjson
(``NOT_PLAIN`` / ``None``), so that errors stay orjson's. json_c has no pure
twin (without it orjson does everything): these tests skip when it is not
built, and fail then under LITE_SERVING_REQUIRE_COMPILED=1.
"""

import math
import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.compiled import JSON
from support.fuzz import examples

json_c = JSON.module


@pytest.fixture(autouse=True)
def _compiled():
    JSON.get()


def same(a, b):
    """Equal values of equal types all the way down (-0.0 is not 0.0, 1 is not 1.0 or True)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b)
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def orjson_dumps(value):
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


# -- writing ------------------------------------------------------------------------------

FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-6, max_value=1e-3),           # orjson's own forms: 1e-5 ≤ |x| < 1e-4
    st.floats(min_value=-1e-4, max_value=-1e-6),
    st.builds(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0],
              st.integers(0, 2**64 - 1)).filter(math.isfinite),
)
INTS = st.one_of(st.integers(-1000, 1000), st.integers(-2**63, 2**64 - 1))
TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
PLAIN = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.tuples(inner, inner), st.dictionaries(TEXT, inner, max_size=5)),
    max_leaves=30)


@pytest.mark.slow
@settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLAIN)
def test_plain_values_are_written_as_orjson_writes_them(value):
    assert json_c.dumps(value) == orjson_dumps(value)


@pytest.mark.parametrize("value", [
    0.0, -0.0, 1.0, 0.1, 1e16, 1e22, 1.5e300, 5e-324, 1e-4, 1e-5, 1.5e-5, -2.5e-5, 9.99e-5, 1e-6,
    1e-7, 3.2e-10, 2**53 + 1.0, 123456.789, -1e-100,
])
def test_floats_in_every_form_orjson_uses(value):
    assert json_c.dumps(value) == orjson_dumps(value)
    assert json_c.dumps([value, {"k": -value}]) == orjson_dumps([value, {"k": -value}])


def test_nan_and_infinity_are_null_as_with_orjson():
    value = [math.nan, math.inf, -math.inf]
    assert json_c.dumps(value) == orjson_dumps(value) == b"[null,null,null]"


def test_every_control_character_and_escape():
    text = "".join(map(chr, range(0x80))) + "\u2028\u2029é😀\x7f"
    assert json_c.dumps(text) == orjson_dumps(text)
    assert json_c.dumps({text: text}) == orjson_dumps({text: text})


def test_64_bit_integer_edges():
    for number in (2**63 - 1, 2**63, 2**64 - 1, -2**63, 0, -1):
        assert json_c.dumps(number) == orjson_dumps(number)


class Str(str):
    pass


class Dict(dict):
    pass


@pytest.mark.parametrize("value", [
    2**64, -2**63 - 1,                     # orjson refuses them: its error, not ours
    "\ud800", {"k": ["\udfff"]},           # lone surrogates
    {1: "a"}, {None: 1}, {("t",): 1},      # keys that are not str (OPT_NON_STR_KEYS rules)
    Str("x"), Dict(a=1), [True, Str("x")], # subclasses
    b"bytes", {1, 2}, frozenset(), object(), 1j,
], ids=repr)
def test_what_is_not_plain_is_left_to_orjson(value):
    assert json_c.dumps(value) is None


def nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_the_limit_is_written_and_deeper_left_to_orjson():
    assert json_c.dumps(nested(json_c.MAX_DEPTH)) == orjson_dumps(nested(json_c.MAX_DEPTH))
    assert json_c.dumps(nested(json_c.MAX_DEPTH + 1)) is None
    assert json_c.loads(orjson_dumps(nested(json_c.MAX_DEPTH))) == nested(json_c.MAX_DEPTH)
    assert json_c.loads(orjson_dumps(nested(json_c.MAX_DEPTH + 1))) is json_c.NOT_PLAIN


def test_a_self_containing_list_is_left_to_orjson_not_a_crash():
    loop = []
    loop.append(loop)
    assert json_c.dumps(loop) is None


# -- reading ------------------------------------------------------------------------------

@pytest.mark.slow
@settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PLAIN)
def test_what_orjson_writes_is_read_back_as_orjson_reads_it(value):
    document = orjson_dumps(value)
    got = json_c.loads(document)
    if got is json_c.NOT_PLAIN:   # integers past 18 digits, lone surrogates...
        return
    assert same(got, orjson.loads(document))


NUMBER = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z")
SPACE = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])
ESCAPE = st.one_of(
    st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]),
    st.integers(0, 0xFFFF).map(lambda c: f"\\u{c:04x}"),
    st.integers(0, 0xFFFF).map(lambda c: f"\\u{c:04X}"),
    st.tuples(st.integers(0xD800, 0xDBFF), st.integers(0xDC00, 0xDFFF)).map(
        lambda pair: "\\u%04x\\u%04x" % pair),
)
STRING = st.lists(st.one_of(ESCAPE, st.characters(codec="utf-8", exclude_characters='"\\')),
                  max_size=8).map(lambda parts: '"' + "".join(parts) + '"')
DOCUMENT = st.recursive(
    st.one_of(NUMBER, STRING, st.sampled_from(["true", "false", "null"])),
    lambda inner: st.one_of(
        st.tuples(SPACE, st.lists(inner, max_size=4)).map(
            lambda t: "[" + t[0] + ("," + t[0]).join(t[1]) + t[0] + "]"),
        st.tuples(SPACE, st.lists(st.tuples(STRING, inner), max_size=4)).map(
            lambda t: "{" + t[0] + ",".join(k + t[0] + ":" + t[0] + v for k, v in t[1]) + "}")),
    max_leaves=20)


def _encode(document):
    return document.encode("utf-8", "surrogatepass")


@pytest.mark.slow
@settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SPACE, DOCUMENT, SPACE)
def test_documents_read_as_orjson_reads_them(before, document, after):
    data = _encode(before + document + after)
    got = json_c.loads(data)
    try:
        expected = orjson.loads(data)
    except orjson.JSONDecodeError:
        assert got is json_c.NOT_PLAIN   # orjson's error, from orjson
        return
    if got is not json_c.NOT_PLAIN:
        assert same(got, expected)


@pytest.mark.slow
@settings(max_examples=examples(1500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENT, st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=0, max_size=2)),
                          max_size=3))
def test_damaged_documents_are_never_read_differently(document, edits):
    data = bytearray(_encode(document))
    for position, replacement in edits:
        at = position % (len(data) + 1)
        data[at:at + 1] = replacement
    data = bytes(data)
    got = json_c.loads(data)
    if got is json_c.NOT_PLAIN:
        return
    assert same(got, orjson.loads(data))   # json_c read it: orjson must read the same


@pytest.mark.parametrize("document", [
    b"", b" ", b"01", b"1.", b".5", b"-", b"+1", b"[1,]", b'{"a":1,}', b"{'a':1}", b"tru",
    b"nul", b"[1 2]", b'{"a" 1}', b'{"a":}', b"NaN", b"Infinity", b"1e400", b"-1e400",
    b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\u0041"', b'"\\x41"', b'"\\U00e9"', b'"\xff"',
    b'"\xed\xa0\x80"', b'"a\x00b"', b'"a\nb"', b"\xef\xbb\xbf1", b"\x0c1", b"1 2", b"[",
    b'"abc', b"123456789012345678901234567890", b"18446744073709551616", b"-9223372036854775809",
    b"99999999999999999999",
])
def test_what_is_not_plain_or_not_json_is_left_to_orjson(document):
    assert json_c.loads(document) is json_c.NOT_PLAIN


@pytest.mark.parametrize("document, expected", [
    (b"-0", 0), (b"-0.0", -0.0), (b"1E+5", 100000.0), (b"1e5", 100000.0),
    (b"999999999999999999", 999999999999999999), (b"-999999999999999999", -999999999999999999),
    (b"18446744073709551615", 2**64 - 1), (b"-9223372036854775808", -2**63),
    (b'{"a":1,"a":2,"b":3}', {"a": 2, "b": 3}), (b'"\\ud83d\\ude00"', "😀"), (b'"\\u0000"', "\x00"),
    (b' \t\r\n[ ] ', []), (b'"\x7f"', "\x7f"), (b'"\\/"', "/"),
])
def test_edges_read_as_orjson_reads_them(document, expected):
    assert same(json_c.loads(document), orjson.loads(document))
    assert same(json_c.loads(document), expected)


def test_any_bytes_like_body_is_read_and_text_is_left_to_orjson():
    for data in (b'{"a":[1]}', bytearray(b'{"a":[1]}'), memoryview(b'xx{"a":[1]}')[2:]):
        assert json_c.loads(data) == {"a": [1]}
    assert json_c.loads('{"a":[1]}') is json_c.NOT_PLAIN
    assert json_c.loads(12) is json_c.NOT_PLAIN
