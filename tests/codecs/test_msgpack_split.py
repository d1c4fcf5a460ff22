"""split_map and copy_out (the large values of a MessagePack body), both twins: codec_py and
codec_c. What they give, put together the way body_decoder does, is what msgpack gives for the
whole body; the two twins give the same entries, and None for the same bodies."""

import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lite_serving.codecs import codec_py
from support.compiled import CODEC

codec_c = CODEC.module   # None when this checkout has not compiled it


@pytest.fixture(params=["py", "c"])
def C(request):
    return codec_py if request.param == "py" else CODEC.get()


def assemble(entries, body):
    """The map the entries describe, as body_decoder puts it together."""
    view = memoryview(body)
    result = {}
    for key_start, value_start, value_end, data_start, ext_type in entries:
        key = msgpack.unpackb(view[key_start:value_start])
        if data_start < 0:
            value = msgpack.unpackb(view[value_start:value_end])
        else:
            value = codec_py.copy_out(view, data_start, value_end)
            if ext_type >= 0:
                value = msgpack.ExtType(ext_type, value)
        result[sys.intern(key) if type(key) is str else key] = value
    return result


LARGE = 16   # what counts as a large value in these tests: 16 bytes and more

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
           | st.text(max_size=40) | st.binary(max_size=40)
           | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=40)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=5), max_leaves=20)
top_maps = st.dictionaries(st.text(max_size=20) | st.binary(max_size=20), values, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(doc=top_maps)
def test_the_entries_put_together_are_the_map_msgpack_decodes(doc):
    body = msgpack.packb(doc)
    entries = codec_py.split_map(body, LARGE)
    if codec_c is not None:
        assert codec_c.split_map(body, LARGE) == entries
        assert codec_c.split_map(memoryview(bytearray(body)), LARGE) == entries
    large = [v for v in doc.values()
             if type(v) is bytes and len(v) >= LARGE
             or type(v) is msgpack.ExtType and len(v.data) >= LARGE]
    if not large:
        assert entries is None
        return
    assert entries is not None and assemble(entries, body) == msgpack.unpackb(body)
    for cut in range(0, len(body), max(1, len(body) // 7)):   # cut short: never split
        assert codec_py.split_map(body[:cut], LARGE) is None
        if codec_c is not None:
            assert codec_c.split_map(body[:cut], LARGE) is None


def test_entries_say_where_keys_values_and_large_payloads_are(C):
    body = msgpack.packb({"x": b"b" * 20, "n": [1, {"a": 2}], b"e": msgpack.ExtType(78, b"e" * 300),
                          "small": b"s", "t": msgpack.Timestamp(1, 2)})
    entries = C.split_map(body, LARGE)
    assert [(body[k:v], body[v:e] if d < 0 else body[d:e], t) for k, v, e, d, t in entries] == [
        (b"\xa1x", b"b" * 20, -1),
        (b"\xa1n", msgpack.packb([1, {"a": 2}]), -1),
        (b"\xc4\x01e", b"e" * 300, 78),
        (b"\xa5small", b"\xc4\x01s", -1),
        (b"\xa1t", msgpack.packb(msgpack.Timestamp(1, 2)), -1),   # type -1: msgpack's own
    ]


@pytest.mark.parametrize("body", [
    b"",
    msgpack.packb([b"x" * 20]),                       # not a map
    msgpack.packb({"x": b"x" * 20}) + b"\x00",         # bytes after it
    msgpack.packb({"x": b"x" * 20})[:-1],              # cut short
    msgpack.packb({"x": b"x" * 10}),                   # no large value
    msgpack.packb({"x": "t" * 40}),                    # a str is decoded by msgpack
    msgpack.packb({"x": b"x" * 20, "y": 1})[:-1] + b"\xc1",   # the byte no value begins with
    msgpack.packb({"x": b"x" * 20, "d": [[[[1]]]] * 1}).replace(b"\x91\x91\x91\x91\x01", b"\x91" * 4 + b"\xc1"),
])
def test_anything_else_is_left_to_msgpack(C, body):
    assert C.split_map(body, LARGE) is None


def nested(depth):
    """``depth`` lists, one inside the other, around 1."""
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def test_deep_nesting_and_long_walks_are_left_to_msgpack(C):
    limit = codec_py.DEPTH_LIMIT
    assert C.split_map(msgpack.packb({"x": b"x" * 20, "d": nested(limit)}), LARGE) is not None
    assert C.split_map(msgpack.packb({"x": b"x" * 20, "d": nested(limit + 1)}), LARGE) is None
    long_ = {"x": b"x" * 20, "l": list(range(codec_py.WALK_LIMIT))}
    assert C.split_map(msgpack.packb(long_), LARGE) is None
    assert C.split_map(msgpack.packb({"x": b"x" * 20, "l": list(range(1000))}), LARGE) is not None


def test_copy_out_is_bytes_of_the_range(C):
    data = bytearray(range(256)) * (5 * 1024 * 16)   # 5 MiB: the compiled twin asks for huge pages
    for start, end in ((0, 0), (3, 10), (1, len(data)), (100, 5 * 1024 * 1024 - 7)):
        out = C.copy_out(memoryview(data), start, end)
        assert type(out) is bytes and out == bytes(data[start:end])


@pytest.mark.parametrize("body", [
    b"\x81\xa1a\xc6\xff\xff\xff\xff" + b"x" * 32,          # bin 32 of 2**32 - 1 bytes
    b"\x81\xa1a\xc6\x80\x00\x00\x00" + b"x" * 32,          # bin 32 of 2**31 bytes
    b"\x81\xa1a\xc9\xff\xff\xff\xff\x01" + b"x" * 32,      # ext 32 of 2**32 - 1 bytes
    b"\x82\xa1a\xc4\x20" + b"x" * 32 + b"\xa1b\xdd\xff\xff\xff\xff",   # array 32, 2**32 - 1 items
    b"\x82\xa1a\xc4\x20" + b"x" * 32 + b"\xa1b\xdf\x80\x00\x00\x00",   # map 32, 2**31 pairs
    b"\xdf\xff\xff\xff\xff\xa1a\xc4\x20" + b"x" * 32,     # a top map of 2**32 - 1 pairs
], ids=["bin-2**32-1", "bin-2**31", "ext-2**32-1", "array-2**32-1", "map-2**31", "top-map"])
def test_counts_no_body_can_hold_are_refused_alike(C, body):
    """Counts of 2**31 and more (past PY_SSIZE_T_MAX on a 32-bit host, where C arithmetic on
    them would wrap) make the body one that split_map does not take: msgpack says why."""
    assert C.split_map(body, LARGE) is None
    with pytest.raises(ValueError):
        msgpack.unpackb(body)
