"""numpy arrays in MessagePack as one extension type: dtype, shape and the raw bytes.

An array travels as MessagePack ext type ``ARRAY_EXT`` (78, ``"N"``) whose data is:

====================  =====================================================================
1 byte                ``t``: length of the dtype string
``t`` bytes           the dtype as numpy's array-protocol string, ASCII: ``<f4``, ``>i8``,
                      ``|u1``, ``|b1``, ``<c8``... (byte order, kind, item size)
1 byte                ``n``: number of dimensions
``n`` x 8 bytes       the shape, unsigned little-endian
0-7 zero bytes        padding, so that the elements start at a multiple of 8 of the ext data
the elements          ``prod(shape) * item size`` bytes, C (row-major) order
====================  =====================================================================

A request body holding such values gives ``predict`` numpy arrays where they were (the
elements read in place from the bytes MessagePack hands over: no per-element work; the
arrays are read-only, like ``np.frombuffer``'s); an answer holds them when the client asks
with ``Accept: application/msgpack; arrays=ext``. numpy is imported only when an array is met.
"""

ARRAY_EXT = 78
KINDS = "biufc"   # bool, signed and unsigned integers, floats, complex numbers


class ArrayFormError(ValueError):
    """An array ext value that does not describe an array."""


def unpack_array(data):
    """The read-only numpy array an ext value's ``data`` (bytes) describes, or ArrayFormError."""
    try:
        import numpy as np
    except ImportError:
        raise ArrayFormError("it holds a numpy array and numpy is not installed") from None
    end = len(data)
    if end < 2:
        raise ArrayFormError("an array value is too short")
    t = data[0]
    at = 1 + t
    typestr = bytes(data[1:at])
    if at >= end or len(typestr) != t:
        raise ArrayFormError("an array value is too short for its dtype")
    try:
        dtype = np.dtype(typestr.decode("ascii"))
    except (TypeError, ValueError, UnicodeDecodeError):
        raise ArrayFormError(f"an array has dtype {typestr!r}, which numpy does not know") from None
    if dtype.kind not in KINDS or typestr[:1] not in b"<>|=":
        raise ArrayFormError(f"an array has dtype {typestr!r}: use a byte order (<, > or |) "
                             "and a bool, integer, float or complex kind")
    ndim = data[at]
    at += 1
    shape_end = at + 8 * ndim
    if shape_end > end:
        raise ArrayFormError("an array value is too short for its shape")
    shape = tuple(int.from_bytes(data[i:i + 8], "little") for i in range(at, shape_end, 8))
    start = -(-shape_end // 8) * 8
    count = 1
    for n in shape:
        count *= n
    if end - start != count * dtype.itemsize:
        raise ArrayFormError(f"an array of shape {list(shape)} and dtype {typestr.decode()} needs "
                             f"{count * dtype.itemsize} bytes of elements; it has {max(end - start, 0)}")
    return np.frombuffer(data, dtype, count, start).reshape(shape)


def ext_hook(code, data):
    """msgpack's ``ext_hook``: arrays for ``ARRAY_EXT``, ``ExtType`` for every other code."""
    if code == ARRAY_EXT:
        return unpack_array(data)
    import msgpack
    return msgpack.ExtType(code, data)


def array_header(array):
    """The ext data before the elements of ``array`` (a numpy array of a KINDS dtype)."""
    typestr = array.dtype.str.encode("ascii")
    shape = array.shape
    head = (bytes((len(typestr),)) + typestr + bytes((len(shape),))
            + b"".join(n.to_bytes(8, "little") for n in shape))
    return head + bytes(-len(head) % 8)


def packable(array):
    """Whether ``array`` can travel as an array ext value."""
    return array.dtype.kind in KINDS and array.ndim < 256 and not array.dtype.fields


def pack_array_ext(array):
    """The MessagePack bytes of ``array`` as one ext value (one copy of the elements)."""
    import numpy as np
    data = array if array.flags.c_contiguous else np.array(array, order="C")
    head = array_header(data)
    length = len(head) + data.nbytes
    if length <= 0xFF:
        ext = b"\xc7" + bytes((length, ARRAY_EXT))
    elif length <= 0xFFFF:
        ext = b"\xc8" + length.to_bytes(2, "big") + bytes((ARRAY_EXT,))
    else:
        ext = b"\xc9" + length.to_bytes(4, "big") + bytes((ARRAY_EXT,))
    return b"".join((ext, head, data.reshape(-1).view(np.uint8)))


def pack_answer_array(array):
    """An answer's array as an ext value; None (the tensor codec's nested arrays or
    ``tolist()``) for dtypes this form does not carry."""
    return pack_array_ext(array) if packable(array) else None
