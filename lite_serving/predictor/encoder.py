"""What ``predict`` returned → status, content type, header lines and body bytes.

- ``dict``/``list``/``tuple`` (and numpy values) → JSON or MessagePack, by ``Accept``;
- ``str`` → text/plain; ``bytes`` → PNG/JPEG when sniffed, else octet-stream;
- :class:`lite_serving.Response` or a Flask/werkzeug response → as given;
- anything else → 500.

numpy arrays, at the top or anywhere inside, are written without ``tolist()``:
orjson writes them to JSON itself (given a C-contiguous, native-order copy when
they are not one), and the tensor codec (``codec``) to MessagePack, where
decoding gives the values and types of ``tolist()``. Nothing here imports numpy.
"""

import os

from lite_serving.codecs.codec import pack_array
from lite_serving.codecs.json_codec import JSON_TYPE, is_ndarray
from lite_serving.codecs.json_codec import dumps as encode_json  # bytes as base64
from lite_serving.errors import ServingError
from lite_serving.predictor.body_decoder import MSGPACK_TYPES
from lite_serving.predictor.stream import StreamBody
from lite_serving.process.logs import get_logger
from lite_serving.response import InvalidResponse, Response, header_lines

log = get_logger("lite_serving")

MSGPACK_TYPE = b"application/msgpack"
TEXT_TYPE = b"text/plain; charset=utf-8"

_OFFERS = ("application/json",) + MSGPACK_TYPES
_accept_cache = {}
_ACCEPT_CACHE_LIMIT = 512


def _msgpack_default(obj):
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not MessagePack serializable")


def encode_msgpack(obj, pack_array=pack_array):
    """MessagePack bytes; numpy arrays anywhere inside are written by the tensor codec (as
    nested arrays), or by ``pack_array`` when given (``array_ext``: as ext values)."""
    import msgpack  # imported on first use: start-up stays light for JSON-only services
    if is_ndarray(obj):
        packed = pack_array(obj)
        if packed is not None:
            return packed
    arrays = []

    def default(value):
        if is_ndarray(value):
            packed = pack_array(value)
            if packed is not None:
                arrays.append(packed)
                return _placeholder(msgpack)[0]
        return _msgpack_default(value)

    body = msgpack.packb(obj, default=default, use_bin_type=True)
    if not arrays:
        return body
    # msgpack-python cannot take bytes already packed: each array went in as a placeholder,
    # in the order it was met, and its bytes replace that placeholder here
    pieces = body.split(_placeholder(msgpack)[1])
    if len(pieces) != len(arrays) + 1:  # the data itself holds the placeholder's 18 bytes
        return msgpack.packb(obj, default=_msgpack_default, use_bin_type=True)
    joined = [pieces[0]]
    for packed, piece in zip(arrays, pieces[1:]):
        joined += (packed, piece)
    return b"".join(joined)


_placeholders = []


def _placeholder(msgpack):
    """An ext value with 16 random bytes, made once per process, and its packed bytes.

    Random, so that no client can know it and put it in data a predictor echoes;
    the count of pieces is checked anyway.
    """
    if not _placeholders:
        ext = msgpack.ExtType(0x4C, os.urandom(16))
        _placeholders.append((ext, msgpack.packb(ext)))
    return _placeholders[0]


def parse_accept(accept):
    """Accept value → [(type, subtype, q, arrays=ext)] (RFC 9110 §12.5.1); malformed ranges
    skipped. ``arrays=ext`` asks for numpy arrays as ``array_ext`` values in MessagePack."""
    ranges = []
    for item in accept.split(","):
        parts = item.split(";")
        media = parts[0].strip().lower()
        if "/" not in media:
            continue
        main, _, sub = media.partition("/")
        q = 1.0
        arrays_ext = False
        for param in parts[1:]:
            key, _, value = param.strip().partition("=")
            key = key.strip().lower()
            if key == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
            elif key == "arrays":
                arrays_ext = value.strip().strip('"').lower() == "ext"
        ranges.append((main, sub, q, arrays_ext))
    return ranges


def accept_quality(offer, ranges):
    """(q, arrays=ext) of the most specific range that matches ``offer``."""
    main, _, sub = offer.partition("/")
    best, best_rank, arrays_ext = 0.0, -1, False
    for rmain, rsub, q, ext in ranges:
        if rmain == main and rsub == sub:
            rank = 2
        elif rmain == main and rsub == "*":
            rank = 1
        elif rmain == "*" and rsub == "*":
            rank = 0
        else:
            continue
        if rank > best_rank:
            best, best_rank, arrays_ext = q, rank, ext
    return best, arrays_ext


def negotiate(accept):
    """``"json"``, ``"msgpack"``, ``"msgpack arrays"`` (numpy arrays as ``array_ext`` values)
    or ``None`` (nothing acceptable) for an Accept value."""
    if not accept:
        return "json"
    choice = _accept_cache.get(accept, 0)
    if choice != 0:
        return choice
    ranges = parse_accept(accept)
    choice, best, arrays_ext = None, 0.0, False
    for offer in _OFFERS:
        q, ext = accept_quality(offer, ranges)
        if q > best:
            choice, best, arrays_ext = offer, q, ext
    if choice is not None:
        if choice == "application/json":
            choice = "json"
        else:
            choice = "msgpack arrays" if arrays_ext else "msgpack"
    if len(_accept_cache) < _ACCEPT_CACHE_LIMIT:
        _accept_cache[accept] = choice
    return choice


def encode_structured(obj, accept):
    """A JSON-like value → (status, content type, body) by Accept; 406 when nothing fits."""
    kind = negotiate(accept)
    if kind == "json":
        return 200, JSON_TYPE, encode_json(obj)
    if kind == "msgpack":
        return 200, MSGPACK_TYPE, encode_msgpack(obj)
    if kind == "msgpack arrays":
        from lite_serving.codecs.array_ext import pack_answer_array
        return 200, MSGPACK_TYPE, encode_msgpack(obj, pack_answer_array)
    raise ServingError("none of the acceptable media types can be produced; "
                       "use application/json or application/msgpack", 406)


def sniff_bytes(data):
    if data[:4] == b"\x89PNG":
        return b"image/png"
    if data[:3] == b"\xff\xd8\xff":
        return b"image/jpeg"
    return b"application/octet-stream"


def _is_werkzeug_response(obj):
    for cls in type(obj).__mro__:
        if cls.__name__ == "Response" and cls.__module__.split(".", 1)[0] in ("werkzeug", "flask"):
            return True
    return False


def _checked_status(status):
    try:
        status = int(status)
    except (TypeError, ValueError):
        status = 0
    if not 200 <= status <= 599:
        raise InvalidResponse(f"predict returned a response with status {status!r}; "
                            "use a final status from 200 to 599")
    return status


def _media_type(value):
    """A predictor's content type as header bytes (checked where the head is built)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    try:
        return str(value).encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidResponse(f"predict returned a response with Content-Type {value!r}, "
                            "which is not latin-1 text") from None


def _from_werkzeug(resp):
    if resp.is_streamed:
        body = StreamBody(resp.iter_encoded(), on_close=resp.close)
    else:
        body = resp.get_data()
    return (_checked_status(resp.status_code), _media_type(resp.headers.get("Content-Type")), body,
            header_lines(resp.headers.to_wsgi_list()))


def _from_response(resp):
    body = resp.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif hasattr(body, "__aiter__"):
        from lite_serving.server.async_predict import async_stream_body
        body = async_stream_body(body)
    elif not isinstance(body, (bytes, bytearray, memoryview)):
        body = StreamBody(iter(body), on_close=getattr(body, "close", None))
    else:
        body = bytes(body)
    return _checked_status(resp.status), _media_type(resp.content_type), body, header_lines(resp.headers)


def encode_result(result, accept):
    """What ``predict`` returned → (status, content type bytes or None, body bytes, header lines)."""
    cls = type(result)
    if cls is dict or cls is list or cls is tuple:
        status, ctype, body = encode_structured(result, accept)
        return status, ctype, body, b""
    if cls is str:
        return 200, TEXT_TYPE, result.encode("utf-8"), b""
    if cls is bytes:
        return 200, sniff_bytes(result), result, b""
    if isinstance(result, Response):
        return _from_response(result)
    if isinstance(result, (dict, list, tuple)) or cls.__module__ == "numpy":
        status, ctype, body = encode_structured(result, accept)
        return status, ctype, body, b""
    if isinstance(result, str):
        return 200, TEXT_TYPE, str(result).encode("utf-8"), b""
    if isinstance(result, (bytes, bytearray, memoryview)):
        result = bytes(result)
        return 200, sniff_bytes(result), result, b""
    if _is_werkzeug_response(result):
        return _from_werkzeug(result)
    raise InvalidResponse(
        f"predict returned {cls.__name__}; valid results are dict, list or tuple (sent as JSON or "
        "MessagePack by Accept), str (text/plain), bytes (image or octet-stream), numpy arrays, "
        "lite_serving.Response and flask.Response")
