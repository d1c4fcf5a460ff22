"""v2 tensors: the protocol's datatypes, and tensors converted from and to JSON data and binary data.

JSON data is checked, not coerced (a boolean is no number; a value past its
datatype's range is a 400). Element conversions run in numpy or the tensor
codec, never per element in Python. BF16 tensors are held as their uint16 bits.
"""

import math
import sys
from operator import methodcaller

from lite_serving.codecs import json_codec
from lite_serving.codecs.codec import join_length_prefixed, split_length_prefixed
from lite_serving.errors import ServingError

# v2 datatype → (numpy type name, ONNX tensor type); BYTES is a numpy object array of str.
DATATYPES = {
    "BOOL": ("bool", "tensor(bool)"),
    "UINT8": ("uint8", "tensor(uint8)"),
    "UINT16": ("uint16", "tensor(uint16)"),
    "UINT32": ("uint32", "tensor(uint32)"),
    "UINT64": ("uint64", "tensor(uint64)"),
    "INT8": ("int8", "tensor(int8)"),
    "INT16": ("int16", "tensor(int16)"),
    "INT32": ("int32", "tensor(int32)"),
    "INT64": ("int64", "tensor(int64)"),
    "FP16": ("float16", "tensor(float16)"),
    "BF16": ("uint16", "tensor(bfloat16)"),  # the bits: numpy has no bfloat16
    "FP32": ("float32", "tensor(float)"),
    "FP64": ("float64", "tensor(double)"),
    "BYTES": ("object", "tensor(string)"),
}
ONNX_TO_V2 = {onnx_type: v2 for v2, (_, onnx_type) in DATATYPES.items()}
# numpy dtype (kind, itemsize) → v2 datatype, for what onnxruntime returns
_KIND_TO_V2 = {
    ("b", 1): "BOOL", ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
    ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64",
    ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64",
}
_FLOATS = ("FP16", "BF16", "FP32", "FP64")
# the Python types JSON data may hold for each datatype (integer datatypes: int), and their words
_JSON_TYPES = {"BOOL": {bool}, "BYTES": {str}, **{d: {int, float} for d in _FLOATS}}
_NEEDS = {"BOOL": "true/false", "BYTES": "strings", **{d: "numbers" for d in _FLOATS}}
_FOUND = {bool: "booleans", int: "integers", float: "floating-point numbers", str: "strings",
          type(None): "nulls", dict: "objects", list: "nested lists"}


def _array_from_json(data, datatype, numpy_type, name):
    """JSON ``data`` (flat or nested) → a numpy array of ``numpy_type``; a wrong element → 400.

    Checked, not coerced: every element's Python type must be one the datatype
    takes (a boolean is no number), and every value must fit the datatype.
    """
    import numpy as np

    needs = _NEEDS.get(datatype, "integers")
    ragged = (f"input {name!r}: data must be a flat list, or nested lists of equal lengths, "
              f"of {needs}")
    try:
        items = np.array(data, dtype=object)  # the shape nested lists make; elements untouched
    except (ValueError, TypeError, RecursionError):
        raise ServingError(ragged) from None
    flat = items.ravel().tolist()
    wrong = set(map(type, flat)) - _JSON_TYPES.get(datatype, {int})
    if wrong:
        if list in wrong or tuple in wrong:
            raise ServingError(ragged)
        found = " or ".join(sorted(_FOUND.get(kind, f"{kind.__name__} values") for kind in wrong))
        raise ServingError(f"input {name!r}: {datatype} data must be {needs}, not {found}")
    if datatype == "BYTES":
        return items
    if datatype == "BOOL":
        return items.astype(bool)
    if datatype in _FLOATS:
        return _floats_from_json(np, items, datatype, numpy_type, name)
    info = np.iinfo(numpy_type)
    if flat:
        low, high = min(flat), max(flat)
        if low < info.min or high > info.max:
            raise ServingError(f"input {name!r}: the value {low if low < info.min else high} in data "
                               f"lies outside {datatype} [{info.min}, {info.max}]")
    return np.array(flat, dtype=numpy_type).reshape(items.shape)


def _floats_from_json(np, items, datatype, numpy_type, name):
    """Numbers → FP16/BF16/FP32/FP64, nearest value; a finite number past the range → 400."""
    largest = _BFLOAT16_MAX if datatype == "BF16" else float(np.finfo(numpy_type).max)
    try:
        values = items.astype(np.float64)
    except OverflowError:  # an integer past even float64
        values = None
    if values is not None:
        if datatype == "BF16":
            array = _bfloat16_bits(np, values)
            infinite = (array & 0x7FFF) == 0x7F80
        else:
            with np.errstate(over="ignore"):
                array = values.astype(numpy_type)
            infinite = np.isinf(array)
        overflow = infinite & np.isfinite(values)
        if not overflow.any():
            return array
        value = f"the value {float(values[overflow][0])!r}"
    else:
        value = "an integer"
    raise ServingError(f"input {name!r}: {value} in data lies outside {datatype} "
                       f"[{-largest!r}, {largest!r}]")


_BFLOAT16_MAX = 3.3895313892515355e+38  # (2 - 2**-7) * 2**127


def _bfloat16_bits(np, values):
    """float64 values → the bits (uint16) of the nearest bfloat16, ties to even.

    float64 is rounded to float32 *to odd* first: rounding to nearest twice
    could land on a tie between two bfloat16 the value was not on.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        single = values.astype(np.float32)
    back = single.astype(np.float64)
    bits = single.view(np.uint32)
    bits[np.abs(back) > np.abs(values)] -= 1  # toward zero: a float32 magnitude one step down
    bits[back != values] |= 1
    bits += 0x7FFF + ((bits >> 16) & 1)
    result = (bits >> 16).astype(np.uint16)
    nan = np.isnan(values)
    result[nan] = np.where(np.signbit(values[nan]), 0xFFC0, 0x7FC0)
    return result


def _bfloat16_values(bits):
    """BF16 bits (uint16) → the same values as float32, which JSON encoders can write."""
    import numpy as np

    return (bits.astype(np.uint32) << 16).view(np.float32)


def _bfloat16_from_ortvalue(value):
    """A BF16 OrtValue → a uint16 array of its bits (copied: the OrtValue owns its memory)."""
    import ctypes

    import numpy as np

    shape = value.shape()
    count = math.prod(shape)
    raw = ctypes.string_at(value.data_ptr(), 2 * count) if count else b""
    return np.frombuffer(raw, dtype=np.uint16).reshape(shape)


def _contiguous(array):
    return array if array.flags.c_contiguous else array.copy(order="C")


def _array_from_binary(data, datatype, numpy_type, shape, count, name):
    """A slice of the binary part → a numpy array of ``shape``; sizes and contents checked."""
    import numpy as np

    if datatype == "BYTES":
        try:
            items = split_length_prefixed(data, decode=True)
        except ValueError as exc:
            raise ServingError(f"input {name!r}: BYTES binary data {exc}") from None
        if len(items) != count:
            raise ServingError(f"input {name!r} has {len(items)} BYTES elements in its binary data; "
                               f"shape {shape} needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    wire = np.dtype(numpy_type).newbyteorder("<")
    needed = count * wire.itemsize
    if len(data) != needed:
        raise ServingError(f"input {name!r} has binary_data_size {len(data)}; shape {shape} of "
                           f"{datatype} needs {needed} bytes")
    if datatype == "BOOL" and needed and np.frombuffer(data, dtype=np.uint8).max() > 1:
        raise ServingError(f"input {name!r}: BOOL binary data must be bytes 0 or 1")
    array = np.frombuffer(data, dtype=wire)
    if not array.dtype.isnative or not array.flags.aligned:
        array = array.astype(np.dtype(numpy_type))  # a native, aligned copy
    return array.reshape(shape)


def _output_array(name, value):
    import numpy as np

    if not isinstance(value, np.ndarray):
        raise ServingError(f"output {name!r} is a {type(value).__name__}, not a tensor; the v2 "
                           "protocol carries tensors only", 500)
    return value


def _datatype_of(array, name):
    kind = array.dtype.kind
    if kind in "OUS":
        return "BYTES"
    datatype = _KIND_TO_V2.get((kind, array.dtype.itemsize))
    if datatype is None:
        raise ServingError(f"output {name!r} has numpy type {array.dtype}, which the v2 protocol "
                           "cannot carry", 500)
    return datatype


def _text(item):
    if isinstance(item, (bytes, bytearray)):
        return item.decode("utf-8", "replace")
    return str(item)


_DECODE = methodcaller("decode", "utf-8", "replace")


def _texts(items):
    """BYTES elements → JSON strings: str as they are, bytes as UTF-8 (bad bytes replaced)."""
    kinds = set(map(type, items))
    if kinds <= {str}:
        return items
    if kinds <= {bytes}:
        return list(map(_DECODE, items))
    return list(map(_text, items))


def _to_json_data(array, datatype):
    """The flat ``data`` of a JSON output: a native contiguous numpy array orjson writes directly."""
    if datatype == "BYTES":
        return _texts(array.ravel().tolist())
    if datatype == "BF16":
        array = _bfloat16_values(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array.ravel()


def _to_binary(array, datatype):
    """An output's raw bytes: little-endian row-major (no copy when already so), or BYTES elements."""
    if datatype == "BYTES":
        return join_length_prefixed(array.ravel().tolist())
    little = array.dtype.byteorder == "<" or array.dtype.byteorder == "|" or (
        array.dtype.byteorder == "=" and sys.byteorder == "little")
    if little and array.flags.c_contiguous:
        return memoryview(array).cast("B") if array.size else b""
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def encode_json(obj):
    return json_codec.dumps(obj, bytes_as=json_codec.TEXT)  # the protocol's BYTES are text
