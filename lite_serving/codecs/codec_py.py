"""Tensors as bytes: numpy arrays to MessagePack, and the length-prefixed BYTES elements of v2;
and where the large values of a MessagePack body are (:func:`split_map`, :func:`copy_out`).

This is the readable original of the tensor codec. ``_speedups/codec_c.pyx``
compiles the same rules and gives the same bytes, results and messages;
``lite_serving.codecs.codec`` picks one of the two at import time.

MessagePack of an array (:func:`pack_array`): ``msgpack.unpackb`` of the bytes
equals ``array.tolist()``, values and Python types alike:

- nested arrays by shape, row-major whatever the memory order (a 0-d array is
  its one element);
- ``bool`` as true/false;
- integers in the smallest form msgpack-python writes for them (fixints, then
  uint 8/16/32/64 for positive values, int 8/16/32/64 for negative ones), so
  the bytes are those of ``msgpack.packb(array.tolist())``;
- float64 as float 64, the bytes of ``packb(array.tolist())`` too;
- float32 as float 32: 5 bytes instead of 9, and the same float once decoded,
  since every float32 widens exactly. These are the bytes of
  ``packb(array.tolist(), use_single_float=True)``;
- float16 as float 32 as well: MessagePack has no 16-bit float, and every
  float16 is exactly a float32. A NaN keeps its sign and payload and comes out
  quiet, as hardware conversions make it.

Other dtypes (complex, long double, datetime, strings, objects, records) get
``None``: the caller keeps its own way for them. Long double is refused even
where it is 8 bytes (armv7, aarch64 with some compilers), so that every platform
answers alike.

An array whose MessagePack could take more than ``sys.maxsize`` bytes (a
broadcast view can be that large at no cost) raises ``OverflowError`` before
anything is written; :func:`packed_bound` is that most.

Nothing here imports numpy: the functions that need it are only given numpy
arrays, so numpy is loaded already when they ask for it.
"""

import struct
import sys
from itertools import chain

__all__ = ["pack_array", "split_length_prefixed", "join_length_prefixed", "split_map",
           "copy_out"]

_LENGTH = struct.Struct("<I")

# msgpack-python's integer forms: (lowest, highest, tag byte, payload type). A
# fixint (-32..127) is one byte, the value itself; the others are the tag, then
# the value big-endian.
_INT_FORMS = (
    (-0x20, 0x7F, None, None),
    (0x80, 0xFF, 0xCC, ">u1"),
    (0x100, 0xFFFF, 0xCD, ">u2"),
    (0x10000, 0xFFFFFFFF, 0xCE, ">u4"),
    (0x100000000, 0xFFFFFFFFFFFFFFFF, 0xCF, ">u8"),
    (-0x80, -0x21, 0xD0, ">i1"),
    (-0x8000, -0x81, 0xD1, ">i2"),
    (-0x80000000, -0x8001, 0xD2, ">i4"),
    (-0x8000000000000000, -0x80000001, 0xD3, ">i8"),
)
_FLOAT32, _FLOAT64 = 0xCA, 0xCB
_TRUE, _FALSE = 0xC3, 0xC2
_QUIET = 0x00400000  # the quiet bit of a float32 NaN


def array_header(length):
    """The MessagePack header of an array of ``length`` items, as msgpack-python writes it."""
    if length < 16:
        return bytes((0x90 | length,))
    if length <= 0xFFFF:
        return b"\xdc" + length.to_bytes(2, "big")
    if length <= 0xFFFFFFFF:
        return b"\xdd" + length.to_bytes(4, "big")
    raise ValueError(f"an array dimension of {length} is longer than MessagePack allows (2**32 - 1)")


def pack_array(array):
    """MessagePack bytes of a numpy array (see the module docstring); None for other dtypes."""
    dtype = array.dtype
    kind, size = dtype.kind, dtype.itemsize
    if kind not in "biuf" or (kind == "f" and (size not in (2, 4, 8) or dtype.char == "g")):
        return None
    import numpy as np

    shape = array.shape
    for length in shape:
        array_header(length)  # refuses a dimension MessagePack cannot hold
    if packed_bound(shape, _element_bound(kind, size)) > sys.maxsize:
        raise OverflowError(f"the MessagePack of an array of shape {shape} would take more than "
                            f"{sys.maxsize} bytes, the most a bytes object holds on this platform")
    if array.size == 0:
        return _empty(shape)
    if kind == "b":
        # numpy reads any non-zero byte as True; so does tolist()
        parts = [("u1", np.where(array.view(np.uint8) != 0, _TRUE, _FALSE))]
    elif kind == "f":
        parts = _float_parts(np, array, size)
    else:
        parts = _int_parts(np, array)
        if parts is None:  # the elements take forms of different sizes
            import msgpack
            return msgpack.packb(array.tolist())
    return _lay_out(np, shape, parts)


def _element_bound(kind, size):
    """The most bytes one element takes: true/false, float 32 or 64, an integer's tag and value."""
    if kind == "b":
        return 1
    if kind == "f":
        return 9 if size == 8 else 5
    return 1 + size


def packed_bound(shape, per_element):
    """The most bytes of the MessagePack of an array of ``shape``: its headers, then elements
    of at most ``per_element`` bytes (codec_c computes the same, refusing it past sys.maxsize)."""
    headers, count = 0, 1
    for length in shape:
        headers += count * len(array_header(length))
        count *= length
    return headers + count * per_element


def _empty(shape):
    """An array without elements: headers only, down to the first dimension of length 0."""
    if shape[0] == 0:
        return array_header(0)
    return array_header(shape[0]) + _empty(shape[1:]) * shape[0]


def _float_parts(np, array, size):
    """Tag and big-endian bits: float 64 for float64, float 32 for float32 and float16."""
    if size == 2:
        wide = array.astype(np.float32)
        bits = wide.view(np.uint32)
        bits[np.isnan(wide)] |= _QUIET
        return [("u1", _FLOAT32), (">u4", bits)]
    # the bits are copied as they are (as integers: a NaN's payload is kept)
    bits = array.view(array.dtype.byteorder + "u%d" % size)
    return [("u1", _FLOAT64 if size == 8 else _FLOAT32), (">u%d" % size, bits)]


def _int_parts(np, array):
    """The one msgpack form all the integers take, as parts; None when their forms differ."""
    low, high = int(array.min()), int(array.max())
    forms = [form for form in _INT_FORMS if form[0] <= high and form[1] >= low]
    if len(forms) > 1:
        return None
    (_, _, tag, payload), = forms
    if tag is None:
        return [("i1", array)]  # a fixint is the value's own byte
    return [("u1", tag), (payload, array)]


def _lay_out(np, shape, parts):
    """The bytes of nested arrays of ``shape`` whose elements all take the same bytes.

    Every element is ``parts`` (numpy type, value or array of ``shape``) one
    after the other, so every sub-array at one depth has the same size, and
    headers and elements are written in place through strided views of one
    buffer.
    """
    element = np.dtype([(f"p{i}", kind) for i, (kind, _) in enumerate(parts)])
    sizes = [element.itemsize]  # sizes[d]: bytes of one sub-array at depth d (its header included)
    for length in reversed(shape):
        sizes.insert(0, len(array_header(length)) + length * sizes[0])
    buffer = np.empty(sizes[0], dtype=np.uint8)
    offset = 0
    for depth, length in enumerate(shape):
        header = array_header(length)
        heads = np.ndarray(shape[:depth] + (len(header),), np.uint8, buffer, offset,
                           tuple(sizes[1:depth + 1]) + (1,))
        heads[...] = np.frombuffer(header, dtype=np.uint8)
        offset += len(header)
    slots = np.ndarray(shape, element, buffer, offset, tuple(sizes[1:]))
    for i, (_, value) in enumerate(parts):
        slots[f"p{i}"] = value
    return buffer.tobytes()


def split_length_prefixed(data, decode=False):
    """BYTES elements (each a 4-byte little-endian length, then that many bytes) → a list.

    ``decode=True`` gives ``str`` (UTF-8) instead of ``bytes``. Malformed data
    raises ``ValueError`` saying what is wrong, in words that follow "the data".
    """
    raw = bytes(data)
    items = []
    position, end = 0, len(raw)
    while position < end:
        if end - position < 4:
            raise ValueError("ends inside an element length")
        (length,) = _LENGTH.unpack_from(raw, position)
        position += 4
        if length > end - position:
            raise ValueError(f"has an element of {length} bytes that runs past its end")
        item = raw[position:position + length]
        if decode:
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"has element {len(items)}, which is not UTF-8 text") from None
        items.append(item)
        position += length
    return items


def join_length_prefixed(items):
    """A sequence of bytes or str (as UTF-8) → BYTES elements, each length-prefixed.

    Anything else is written as its ``str()``.
    """
    items = list(items)
    kinds = set(map(type, items))
    if kinds <= {bytes}:
        encoded = items
    elif kinds <= {str}:
        encoded = list(map(str.encode, items))
    else:
        encoded = list(map(_element_bytes, items))
    lengths = list(map(len, encoded))
    longest = max(lengths, default=0)
    if longest > 0xFFFFFFFF:
        raise ValueError(f"an element of {longest} bytes is longer than its 4-byte length allows")
    if 4 * len(lengths) + sum(lengths) > sys.maxsize:
        raise OverflowError(f"the elements would take more than {sys.maxsize} bytes, "
                            "the most a bytes object holds on this platform")
    return b"".join(chain.from_iterable(zip(map(_LENGTH.pack, lengths), encoded)))


def _element_bytes(item):
    if type(item) is bytes:
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return str(item).encode("utf-8")


# -- the large values of a MessagePack body (see body_decoder.decode_msgpack) ------------------

WALK_LIMIT = 10_000   # values split_map reads before it gives up: a few ms in Python at most,
#                       little beside decoding a body that holds a value of ``large`` bytes
DEPTH_LIMIT = 32      # nesting it follows (msgpack's own limit is far deeper: never reached first)

OTHER, BIN, EXT = 0, 1, 2
# the head of each form with a tag byte of its own: (bytes of its length field, bytes of payload
# besides that length, values it contains per unit of length, kind); fixext and ext carry their
# type in the byte after the length
_FORMS = {
    0xC0: (0, 0, 0, OTHER), 0xC2: (0, 0, 0, OTHER), 0xC3: (0, 0, 0, OTHER),
    0xC4: (1, 0, 0, BIN), 0xC5: (2, 0, 0, BIN), 0xC6: (4, 0, 0, BIN),
    0xC7: (1, 0, 0, EXT), 0xC8: (2, 0, 0, EXT), 0xC9: (4, 0, 0, EXT),
    0xCA: (0, 4, 0, OTHER), 0xCB: (0, 8, 0, OTHER),
    0xCC: (0, 1, 0, OTHER), 0xCD: (0, 2, 0, OTHER), 0xCE: (0, 4, 0, OTHER), 0xCF: (0, 8, 0, OTHER),
    0xD0: (0, 1, 0, OTHER), 0xD1: (0, 2, 0, OTHER), 0xD2: (0, 4, 0, OTHER), 0xD3: (0, 8, 0, OTHER),
    0xD4: (0, 1, 0, EXT), 0xD5: (0, 2, 0, EXT), 0xD6: (0, 4, 0, EXT), 0xD7: (0, 8, 0, EXT),
    0xD8: (0, 16, 0, EXT),
    0xD9: (1, 0, 0, OTHER), 0xDA: (2, 0, 0, OTHER), 0xDB: (4, 0, 0, OTHER),
    0xDC: (2, 0, 1, OTHER), 0xDD: (4, 0, 1, OTHER), 0xDE: (2, 0, 2, OTHER), 0xDF: (4, 0, 2, OTHER),
}


def _head(raw, pos, end):
    """The head of the value at ``pos`` (< ``end``): ``(where its payload starts, payload bytes,
    values it contains, kind)``; None when the head is cut short or is the unused byte 0xC1."""
    tag = raw[pos]
    if tag < 0x80 or tag >= 0xE0:
        return pos + 1, 0, 0, OTHER
    if tag < 0x90:
        return pos + 1, 0, 2 * (tag & 0x0F), OTHER
    if tag < 0xA0:
        return pos + 1, 0, tag & 0x0F, OTHER
    if tag < 0xC0:
        return pos + 1, tag & 0x1F, 0, OTHER
    form = _FORMS.get(tag)
    if form is None:
        return None
    size, fixed, per, kind = form
    start = pos + 1 + size + (kind == EXT)
    if start > end:
        return None
    n = int.from_bytes(raw[pos + 1:pos + 1 + size], "big")
    if n > (sys.maxsize - 16) // 2:   # no body here holds it (codec_c keeps 2 * n within size_t)
        return None
    if per:
        return start, 0, per * n, OTHER
    return start, fixed + n, 0, kind


def _skip(raw, pos, end, walked):
    """``(offset past the value at pos, values read so far)``; offset -1 when the value is cut
    short or malformed, nests deeper than DEPTH_LIMIT, or takes the count past WALK_LIMIT."""
    pending = [1]   # values still to read at each depth
    while pending:
        if not pending[-1]:
            pending.pop()
            continue
        pending[-1] -= 1
        walked += 1
        if walked > WALK_LIMIT or pos >= end:
            return -1, walked
        head = _head(raw, pos, end)
        if head is None:
            return -1, walked
        start, length, items, _ = head
        pos = start + length
        if pos > end:
            return -1, walked
        if items:
            if len(pending) > DEPTH_LIMIT:
                return -1, walked
            pending.append(items)
    return pos, walked


def split_map(data, large):
    """Where the entries of the MessagePack map ``data`` holds start and end, for a decoder that
    copies the values of ``large`` bytes or more itself.

    A list with a tuple per entry, in order: ``(key start, value start, value end, payload start,
    ext type)``; payload start is -1 for a value to decode as it is, else the start of the
    payload of a bin value (ext type -1) or of an ext value of type 0-127 that is ``large``
    bytes long or more, which ends with the value. None when ``data`` is anything else: not
    one whole map, a map without such a value, one nested deeper than DEPTH_LIMIT or holding
    more than WALK_LIMIT values.
    """
    raw = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    end = len(raw)
    if not end or raw[0] not in (0xDE, 0xDF) and raw[0] >> 4 != 0x8:
        return None
    head = _head(raw, 0, end)
    if head is None:
        return None
    pos, _, items, _ = head
    entries = []
    found = False
    walked = 1
    for _ in range(items // 2):
        key = pos
        pos, walked = _skip(raw, pos, end, walked)
        if pos < 0 or pos >= end:
            return None
        head = _head(raw, pos, end)
        if head is None:
            return None
        start, length, _, kind = head
        if (kind == BIN or kind == EXT and raw[start - 1] < 0x80) and length >= large:
            if start + length > end:
                return None
            found = True
            entries.append((key, pos, start + length, start, raw[start - 1] if kind == EXT else -1))
            pos = start + length
            walked += 1
        else:
            value = pos
            pos, walked = _skip(raw, pos, end, walked)
            if pos < 0:
                return None
            entries.append((key, value, pos, -1, -1))
    if pos != end or not found:
        return None
    return entries


def copy_out(data, start, end):
    """``data[start:end]`` as bytes."""
    return bytes(memoryview(data)[start:end])
