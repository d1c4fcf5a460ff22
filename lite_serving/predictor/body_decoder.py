"""Request bodies → Python objects, chosen by the media type of ``Content-Type``.

``application/json`` goes through orjson (plain documents through
``json_codec`` until orjson is loaded; the standard library for what orjson
refuses but Python's ``json`` accepts, such as ``NaN`` or integers past 64
bits); the four MessagePack media types through msgpack; anything else stays
raw bytes.
"""

import sys

from lite_serving.codecs import json_codec
from lite_serving.errors import ServingError

RAW, JSON, MSGPACK = 0, 1, 2

MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack",
                 "application/vnd.msgpack", "application/vnd.messagepack")
_KIND_BY_MEDIA_TYPE = {"application/json": JSON, **{t: MSGPACK for t in MSGPACK_TYPES}}
_kind_cache = {}
_KIND_CACHE_LIMIT = 512


def body_kind(content_type):
    """``RAW``, ``JSON`` or ``MSGPACK`` for a Content-Type value (parameters ignored)."""
    kind = _kind_cache.get(content_type)
    if kind is None:
        if content_type is None:
            return RAW
        media = content_type.split(";", 1)[0].strip(" \t").lower()
        kind = _KIND_BY_MEDIA_TYPE.get(media, RAW)
        if len(_kind_cache) < _KIND_CACHE_LIMIT:
            _kind_cache[content_type] = kind
    return kind


def decode_json(body):
    orjson = json_codec.orjson
    if orjson is None:   # only until orjson is loaded
        value = json_codec.loads_plain(body)
        if value is not json_codec.NOT_PLAIN:
            return value
        orjson = json_codec.load()
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        import json as stdlib_json  # only for what orjson refuses
        try:
            return stdlib_json.loads(bytes(body))
        except (ValueError, TypeError, RecursionError):  # RecursionError: nesting too deep
            raise ServingError(f"the request body is not valid JSON: {_json_reason(body, first)}",
                               400) from None


def _json_reason(body, error):
    """Why a body is not JSON, in lite_serving's words when it is not even UTF-8 text."""
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                "JSON must be sent as UTF-8")
    return str(error)


# why msgpack refused a body, by the name of the exception it raised (it raises several unrelated
# types, some without a message)
_MSGPACK_REASONS = {
    "ExtraData": "bytes follow the end of the first value",
    "OutOfData": "the body ends in the middle of a value",
    "FormatError": "it holds a byte that begins no MessagePack value",
    "StackError": "values are nested too deeply",
}


_ext_hooks = []   # array_ext.ext_hook, once the first MessagePack body has loaded it

# A bin or ext value at least this large is copied out of the body by lite_serving rather than
# by msgpack (_with_large_values). For a bytes object this large, glibc's malloc maps fresh
# memory every time (its mmap threshold rises as large blocks are freed, to 32 MiB at most):
# msgpack's copy then touches every page for the first time, 16,384 page faults for 64 MiB,
# where codec.copy_out asks for huge pages (32 faults) and releases the GIL while it copies.
LARGE_VALUE = 32 * 1024 * 1024 - 4096


def decode_msgpack(body):
    """A MessagePack body; numpy arrays sent as ``array_ext`` values come out as arrays."""
    import msgpack  # imported on first use: start-up stays light for JSON-only services
    if not _ext_hooks:
        from lite_serving.codecs.array_ext import ext_hook
        _ext_hooks.append(ext_hook)
    try:
        if len(body) >= LARGE_VALUE:
            value = _with_large_values(body, msgpack.unpackb, _ext_hooks[0])
            if value is not None:
                return value
        return msgpack.unpackb(body, raw=False, ext_hook=_ext_hooks[0])
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        reason = _MSGPACK_REASONS.get(type(exc).__name__) or str(exc) or type(exc).__name__
        if "incomplete input" in reason:
            reason = "the body is empty" if not body else _MSGPACK_REASONS["OutOfData"]
        raise ServingError(f"the request body is not valid MessagePack: {reason}", 400) from None


def _with_large_values(body, unpackb, ext_hook):
    """A body that is one map holding bin or ext values of LARGE_VALUE bytes or more at its top:
    what ``unpackb`` would give, those values copied by ``codec.copy_out`` (a bin is ``bytes``
    and an ext goes to ``ext_hook``, as from msgpack), the rest decoded by ``unpackb`` piece by
    piece. None for any other body, or one msgpack refuses: ``unpackb`` decodes it whole then
    (and says what is wrong)."""
    from lite_serving.codecs import codec
    entries = codec.split_map(body, LARGE_VALUE)
    if entries is None:
        return None
    view = memoryview(body)
    result = {}
    try:
        for key_start, value_start, value_end, data_start, ext_type in entries:
            key = unpackb(view[key_start:value_start], raw=False, ext_hook=ext_hook)
            if type(key) is str:
                key = sys.intern(key)   # as msgpack does with the keys of a map
            elif type(key) is not bytes:
                return None             # msgpack refuses other keys (strict_map_key)
            if data_start < 0:
                value = unpackb(view[value_start:value_end], raw=False, ext_hook=ext_hook)
            else:
                value = codec.copy_out(view, data_start, value_end)
                if ext_type >= 0:
                    value = ext_hook(ext_type, value)
            result[key] = value
    except Exception:  # msgpack's words for it, from the whole body
        return None
    return result


# the decoder of each kind of body (RAW: none, the bytes stay as they are)
_DECODERS = (None, decode_json, decode_msgpack)


def decode_payload(view):
    """What ``payload`` receives: the decoded body, or the raw bytes for other media types."""
    decode = _DECODERS[body_kind(view.head.content_type)]
    if decode is not None:
        return decode(view.body)
    return view.raw_body()


def decode_json_argument(view):
    """What ``json`` receives: the decoded body; other media types → 400."""
    decode = _DECODERS[body_kind(view.head.content_type)]
    if decode is not None:
        return decode(view.body)
    content_type = view.head.content_type
    sent = f"was sent as {content_type}" if content_type else "was sent without a Content-Type"
    raise ServingError(f"input must be JSON or MessagePack: the body {sent}; send JSON with the "
                       "header Content-Type: application/json (curl -H 'Content-Type: "
                       "application/json', requests.post(url, json=...))", 400)
