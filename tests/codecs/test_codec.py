"""The tensor codec, both implementations: codec_py (pure) and codec_c (Cython).

Every test runs against each module through the ``C`` fixture. codec_c is
skipped, with the reason, when it is not built (``python setup.py
build_ext --inplace``); LITE_SERVING_REQUIRE_COMPILED=1 (CI) makes a missing
codec_c fail instead. The contract: ``msgpack.unpackb(pack_array(a))`` equals
``a.tolist()`` in values and Python types, and the bytes are msgpack-python's
(with float32 and float16 as float 32).
"""

import math
import struct
import sys

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

np = pytest.importorskip("numpy")
hnp = pytest.importorskip("hypothesis.extra.numpy")

from lite_serving.codecs import codec_py  # noqa: E402
from support.compiled import CODEC  # noqa: E402
from support.fuzz import examples  # noqa: E402

codec_c = CODEC.module   # None when this checkout has not compiled it
compiled_or_skip = CODEC.get


@pytest.fixture(params=["py", "c"])
def C(request):
    """The codec module under test."""
    return codec_py if request.param == "py" else compiled_or_skip()


INTEGERS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOATS = ["float16", "float32", "float64"]
DTYPES = ["bool"] + INTEGERS + FLOATS


def typed(value):
    """A value with the type of everything inside it spelled out; NaN made comparable."""
    if isinstance(value, list):
        return ["list", [typed(v) for v in value]]
    if isinstance(value, float) and math.isnan(value):
        return ["float", "nan", math.copysign(1.0, value)]
    return [type(value).__name__, value]


def expected_bytes(array):
    """msgpack-python's bytes for ``array.tolist()``, floats below 64 bits as float 32."""
    single = array.dtype.kind == "f" and array.dtype.itemsize < 8
    return msgpack.packb(array.tolist(), use_single_float=single)


def has_nan(array):
    return array.dtype.kind == "f" and bool(np.isnan(array).any())


def check(C, array):
    """The contract, for one array."""
    packed = C.pack_array(array)
    assert typed(msgpack.unpackb(packed)) == typed(array.tolist())
    if not has_nan(array):  # a NaN's bits may differ from msgpack-python's; its value does not
        assert packed == expected_bytes(array)
    return packed


# -- examples -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_decodes_to_tolist(C, dtype):
    if dtype == "bool":
        array = np.array([[True, False, True], [False, False, True]])
    elif dtype in FLOATS:
        array = np.array([[0.0, -0.0, 1.5], [-2.25, 1e-3, 65504.0]], dtype=dtype)
    else:
        info = np.iinfo(dtype)
        array = np.array([[info.min, info.max, 0], [1, info.max // 3, info.min // 5]], dtype=dtype)
    check(C, array)


@pytest.mark.parametrize("values", [
    [0, 1, 127], [-1, -32], [-33, -128], [128, 255], [256, 65535], [-129, -32768], [65536, 2**32 - 1],
    [-32769, -2**31], [2**32, 2**63 - 1], [-2**31 - 1, -2**63],
    [0, 127, 128, 255, 256, 65535, 65536, 2**32, -1, -32, -33, -128, -129, -2**15, -2**15 - 1, -2**63],
])
def test_integers_take_msgpack_pythons_smallest_forms(C, values):
    packed = check(C, np.array(values, dtype=np.int64))
    assert packed == msgpack.packb(values)


def test_uint64_past_int64(C):
    values = [2**64 - 1, 2**63, 0, 2**63 - 1]
    assert C.pack_array(np.array(values, dtype=np.uint64)) == msgpack.packb(values)


def test_float32_is_float32_in_five_bytes(C):
    array = np.array([0.1, -3.5, 1e30], dtype=np.float32)
    packed = check(C, array)
    assert packed == b"\x93" + b"".join(b"\xca" + struct.pack(">f", v) for v in array.tolist())
    assert len(packed) == 1 + 5 * 3  # packb(tolist()) spends 9 bytes on each
    assert msgpack.unpackb(packed) == array.tolist()  # float32 widens exactly


def test_float64_is_float64(C):
    array = np.array([0.1, 1 / 3], dtype=np.float64)
    assert check(C, array) == msgpack.packb(array.tolist())


def test_float16_is_float32(C):
    array = np.array([0.1, 65504, -6.1e-5, 6e-8], dtype=np.float16)  # normal and subnormal
    packed = check(C, array)
    assert packed[1] == 0xCA and len(packed) == 1 + 5 * 4


def test_nan_and_infinities(C):
    for dtype in FLOATS:
        array = np.array([np.nan, np.inf, -np.inf, -np.nan], dtype=dtype)
        decoded = msgpack.unpackb(C.pack_array(array))
        assert math.isnan(decoded[0]) and decoded[1:3] == [math.inf, -math.inf] and math.isnan(decoded[3])


def test_float32_nan_bits_are_kept(C):
    bits = np.array([0x7FC00001, 0xFFA00000, 0x7F800001], dtype=np.uint32)  # quiet, signalling
    packed = C.pack_array(bits.view(np.float32))
    assert packed == b"\x93" + b"".join(b"\xca" + struct.pack(">I", b) for b in bits.tolist())


def test_float16_nan_comes_out_quiet_with_its_payload(C):
    halves = np.array([0x7E00, 0xFC01, 0x7D55], dtype=np.uint16)  # quiet; signalling ones
    packed = C.pack_array(halves.view(np.float16))
    floats = [struct.unpack(">I", packed[i + 1:i + 5])[0] for i in range(1, len(packed), 5)]
    assert floats == [0x7FC00000, 0xFFC02000, 0x7FEAA000]


def test_zero_dimensional_arrays_are_their_element(C):
    for value, dtype in ((7, "int64"), (True, "bool"), (2.5, "float32"), (-300, "int16")):
        array = np.array(value, dtype=dtype)
        assert C.pack_array(array) == expected_bytes(array)
        assert msgpack.unpackb(C.pack_array(array)) == value


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0), (2, 0, 4), (2, 3, 0), (1, 1, 0, 5), (20, 0)])
def test_empty_arrays(C, shape):
    for dtype in ("float32", "int8", "bool"):
        check(C, np.zeros(shape, dtype=dtype))


@pytest.mark.parametrize("length", [15, 16, 65535, 65536])
def test_array_header_forms(C, length):
    array = np.arange(length, dtype=np.uint8) % 100
    check(C, array)
    check(C, array.reshape(1, length))


def test_memory_orders_and_views(C):
    base = np.arange(2 * 3 * 4 * 5, dtype=np.int32).reshape(2, 3, 4, 5) - 60
    views = [base.T, np.asfortranarray(base), base[:, ::2, ::-1], base[..., 1], base[1, :, 2:3, ::3],
             np.broadcast_to(base[0, 0], (3, 4, 5)), base.astype(">i4"), base.astype(">f4")[::-1].T,
             base.astype("<f8")[:, 1], base.astype(">f2"), (base > 0).T]
    for view in views:
        check(C, view)


def test_byte_swapped_floats_keep_their_values(C):
    array = np.array([1.5, -0.1, 3e38], dtype=">f4")
    assert msgpack.unpackb(C.pack_array(array)) == array.tolist()
    assert C.pack_array(array) == C.pack_array(array.astype("<f4"))


def test_bool_bytes_other_than_one_are_true(C):
    array = np.array([0, 1, 2, 255], dtype=np.uint8).view(np.bool_)
    assert msgpack.unpackb(C.pack_array(array)) == array.tolist() == [False, True, True, True]


@pytest.mark.parametrize("array", [
    np.array([1 + 2j]), np.array([1.5], dtype=np.longdouble), np.array(["a"]), np.array([b"a"]),
    np.array([object()]), np.array(["2024-01-01"], dtype="datetime64[D]"), np.array([1], dtype="m8[s]"),
    np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]), np.zeros(2, dtype="V3"),
], ids=lambda a: str(a.dtype))
def test_other_dtypes_are_left_to_the_caller(C, array):
    assert C.pack_array(array) is None


# the longest dimension this platform's numpy builds: 2**63 - 1, or 2**31 - 1 on 32-bit ones
LONGEST_DIMENSION = int(np.iinfo(np.intp).max)


@pytest.mark.parametrize("length", [2**31 - 1, 2**32 - 1, 2**32])
def test_a_dimension_msgpack_cannot_hold_is_refused(C, length):
    """A dimension past 2**32 - 1 is refused, even in an empty array; up to it, it is written.

    32-bit numpy builds no dimension past 2**31 - 1: there, the dimensions it can build pack."""
    if length > LONGEST_DIMENSION:
        pytest.skip(f"numpy builds no dimension of {length} on this platform")
    array = np.empty((0, length), dtype=bool)  # numpy's limit counts the bytes of the rows
    if length <= 2**32 - 1:
        assert C.pack_array(array) == b"\x90"
        return
    with pytest.raises(ValueError) as caught:
        C.pack_array(array)
    assert str(caught.value) == (f"an array dimension of {length} is longer than MessagePack "
                                 "allows (2**32 - 1)")


# Arrays whose MessagePack could not fit a bytes object: broadcast views cost nothing however
# many elements they show. BITS is 63 (31 on 32-bit platforms): sizes go up to 2**BITS - 1.
BITS = sys.maxsize.bit_length()
HALF = BITS // 2
# numpy itself refuses views of more than sys.maxsize bytes: each case is within that
TOO_LARGE = {
    "float16 as float 32": ("float16", (2**HALF, 2**(BITS - 2 - HALF))),
    "float64": ("float64", (2**HALF, 2**(BITS - 3 - HALF) - 1)),
    "int8 as fixints": ("int8", (2**HALF, 2**(BITS - HALF) - 1)),
    "int64": ("int64", (2**HALF, 2**(BITS - 3 - HALF) - 1)),
    "headers and elements": ("bool", (2**HALF, 2**(BITS - HALF) - 1)),
    "headers alone": ("bool", (2**HALF, 2**(BITS - HALF) - 1, 0)),
    "the first report": ("float16", (2147614724, 1717882063)),
}


@pytest.mark.parametrize("case", sorted(TOO_LARGE))
def test_an_array_too_large_for_a_bytes_object_is_refused(C, case):
    """Past sys.maxsize bytes at most, refused before anything is allocated (it used to wrap
    around to a small buffer, and writing past it crashed the process)."""
    dtype, shape = TOO_LARGE[case]
    if max(shape) > LONGEST_DIMENSION:
        pytest.skip(f"numpy builds no dimension of {max(shape)} on this platform")
    array = np.broadcast_to(np.zeros((), dtype=dtype), shape)
    per_element = {"float16": 5, "float32": 5, "float64": 9, "bool": 1, "int8": 2, "int64": 9}[dtype]
    assert codec_py.packed_bound(shape, per_element) > sys.maxsize  # the cases are what they say
    with pytest.raises(OverflowError) as caught:
        C.pack_array(array)
    assert str(caught.value) == (f"the MessagePack of an array of shape {shape} would take more "
                                 f"than {sys.maxsize} bytes, the most a bytes object holds on "
                                 "this platform")


@pytest.mark.skipif(BITS < 63, reason="on 32-bit platforms such an array could be allocated")
def test_an_array_too_large_for_memory_is_a_memory_error(C):
    """Within sys.maxsize bytes but past what memory holds: MemoryError, and nothing written."""
    shape = (2**31, 2**28)
    assert codec_py.packed_bound(shape, 9) < sys.maxsize
    with pytest.raises(MemoryError):
        C.pack_array(np.broadcast_to(np.float64(1), shape))


def test_large_arrays(C):
    rng = np.random.default_rng(7)
    check(C, rng.random(300_000, dtype=np.float32).reshape(300, 1000))
    check(C, rng.integers(-2**40, 2**40, 100_000))  # every integer form at once
    check(C, rng.random(100_000) > 0.5)


# -- properties -----------------------------------------------------------------------------------

def _dtypes():
    return st.sampled_from(DTYPES).flatmap(
        lambda name: st.sampled_from([np.dtype(name), np.dtype(name).newbyteorder()]))


@st.composite
def arrays(draw):
    """Arrays of every dtype and both byte orders, any shape, then viewed in other orders."""
    dtype = draw(_dtypes())
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    array = draw(hnp.arrays(dtype, shape))
    change = draw(st.sampled_from(["none", "transpose", "fortran", "reverse", "step"]))
    if change == "transpose":
        array = array.T
    elif change == "fortran":
        array = np.asfortranarray(array)
    elif change == "reverse" and array.ndim:
        array = array[::-1]
    elif change == "step" and array.ndim:
        array = array[..., ::2]
    return array


PROPERTY = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(array=arrays())
def test_property_pure_decodes_to_tolist(array):
    check(codec_py, array)


@PROPERTY
@given(array=arrays())
def test_property_compiled_decodes_to_tolist(array):
    check(compiled_or_skip(), array)


@PROPERTY
@given(dtype=_dtypes(), raw=st.binary(max_size=64), shape=st.sampled_from(["flat", "rows", "0-d"]))
def test_property_compiled_and_pure_give_the_same_bytes(dtype, raw, shape):
    """Any bit pattern (NaN payloads, odd bool bytes) in any dtype: one answer, byte for byte."""
    C = compiled_or_skip()
    raw = raw[:len(raw) - len(raw) % dtype.itemsize]
    array = np.frombuffer(raw, dtype=dtype)
    if shape == "rows" and array.size % 2 == 0:
        array = array.reshape(2, -1).T
    elif shape == "0-d" and array.size:
        array = array[0:1].reshape(())
    assert C.pack_array(array) == codec_py.pack_array(array)


# -- BYTES elements -------------------------------------------------------------------------------

def prefixed(*items):
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_split_and_join(C):
    data = prefixed(b"", b"abc", "héllo".encode(), b"\x00\xff")
    assert C.split_length_prefixed(data) == [b"", b"abc", "héllo".encode(), b"\x00\xff"]
    assert C.split_length_prefixed(memoryview(data)) == [b"", b"abc", "héllo".encode(), b"\x00\xff"]
    assert C.split_length_prefixed(data[:-2] + b"ab", decode=True)[:3] == ["", "abc", "héllo"]
    assert C.split_length_prefixed(b"") == []
    assert C.join_length_prefixed([b"", b"abc", "héllo".encode(), b"\x00\xff"]) == data
    assert C.join_length_prefixed(["", "abc", "héllo", b"\x00\xff"]) == data
    assert C.join_length_prefixed([]) == b""


@pytest.mark.skipif(BITS > 31, reason="64-bit: no list of elements comes near sys.maxsize bytes; "
                    "tools/cross/run.sh runs this under 32-bit emulation")
@pytest.mark.parametrize("kind", [bytes, str])
def test_join_past_the_largest_bytes_object_is_refused(C, kind):
    """On 32 bits, 2**11 elements of 1 MiB (the same object, so cheap) add up past 2**31 - 1."""
    item = kind(2**20) if kind is bytes else "x" * 2**20
    with pytest.raises(OverflowError) as caught:
        C.join_length_prefixed([item] * (sys.maxsize // (2**20 + 4) + 1))
    assert str(caught.value) == (f"the elements would take more than {sys.maxsize} bytes, the "
                                 "most a bytes object holds on this platform")


def test_join_takes_bytes_likes_and_writes_anything_else_as_text(C):
    assert C.join_length_prefixed([bytearray(b"ab"), memoryview(b"c"), 7, 1.5, None]) == \
        prefixed(b"ab", b"c", b"7", b"1.5", b"None")
    assert C.join_length_prefixed(np.array(["x", "yz"]).tolist()) == prefixed(b"x", b"yz")


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x00", "ends inside an element length"),
    (prefixed(b"a") + b"\x01", "ends inside an element length"),
    (b"\x05\x00\x00\x00abc", "has an element of 5 bytes that runs past its end"),
    (prefixed(b"a") + b"\xff\xff\xff\xff", "has an element of 4294967295 bytes that runs past its end"),
])
def test_malformed_elements(C, data, message):
    with pytest.raises(ValueError) as caught:
        C.split_length_prefixed(data)
    assert str(caught.value) == message


def test_elements_that_are_not_utf8(C):
    with pytest.raises(ValueError) as caught:
        C.split_length_prefixed(prefixed(b"ok", b"\xc3"), decode=True)
    assert str(caught.value) == "has element 1, which is not UTF-8 text"
    assert C.split_length_prefixed(prefixed(b"ok", b"\xc3")) == [b"ok", b"\xc3"]


def test_text_that_cannot_be_utf8_is_refused(C):
    with pytest.raises(UnicodeEncodeError):
        C.join_length_prefixed(["\ud800"])


@settings(max_examples=examples(200), deadline=None)
@given(items=st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=20)), max_size=30))
def test_property_join_then_split(items):
    for C in (codec_py, codec_c) if codec_c is not None else (codec_py,):
        data = C.join_length_prefixed(items)
        assert C.split_length_prefixed(data) == [i if isinstance(i, bytes) else i.encode() for i in items]


@settings(max_examples=examples(300), deadline=None)
@given(data=st.binary(max_size=40), decode=st.booleans())
def test_property_split_agrees_on_any_bytes(data, decode):
    C = compiled_or_skip()

    def outcome(mod):
        try:
            return mod.split_length_prefixed(data, decode)
        except ValueError as exc:
            return str(exc)

    assert outcome(C) == outcome(codec_py)


# -- which twin is used ---------------------------------------------------------------------------

def test_the_choice_of_twin_and_why(monkeypatch):
    from lite_serving import speedups

    monkeypatch.delenv("LITE_SERVING_PURE", raising=False)
    module, how = speedups.choose("lite_serving.codecs.missing_c", "lite_serving.codecs.codec_py", "codec")
    assert module is codec_py
    assert how.startswith("pure Python (no compiled codec beside ") and "build_ext --inplace" in how
    if codec_c is not None:
        assert speedups.choose("lite_serving.codecs.codec_c", "lite_serving.codecs.codec_py", "codec") == (codec_c, "compiled (Cython)")
    monkeypatch.setenv("LITE_SERVING_PURE", "1")
    assert speedups.choose("lite_serving.codecs.codec_c", "lite_serving.codecs.codec_py", "codec") == (codec_py, "pure Python (LITE_SERVING_PURE is set)")


def test_a_compiled_module_without_a_pure_twin_is_chosen_or_none(monkeypatch):
    """json_c has no pure-Python twin (orjson writes those documents): None stands for it."""
    from lite_serving import speedups

    monkeypatch.delenv("LITE_SERVING_PURE", raising=False)
    module, how = speedups.choose("lite_serving.codecs.missing_c", None, "JSON codec")
    assert module is None
    assert how.startswith("none (no compiled JSON codec beside ") and "build_ext --inplace" in how
    if codec_c is not None:
        assert speedups.choose("lite_serving.codecs.codec_c", None, "codec") == (codec_c, "compiled (Cython)")
    monkeypatch.setenv("LITE_SERVING_PURE", "1")
    assert speedups.choose("lite_serving.codecs.codec_c", None, "codec") == (None, "none (LITE_SERVING_PURE is set)")
