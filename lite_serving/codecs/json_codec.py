"""JSON in and out: orjson, loaded once the server has a moment; plain documents before that.

Importing orjson takes about as much CPU as everything else lite_serving does
before its first answer (orjson imports uuid, dataclasses, inspect, json and
datetime), so it is not imported at start-up. Until it is, documents made
only of dicts with string keys, lists, tuples, strings, integers, floats,
booleans and None are read and written by the compiled ``json_c``, which
gives the objects and bytes orjson gives. Anything else loads orjson on the
spot: so do the pure-Python mode (no ``json_c``) and the first document that
is not plain. The I/O loop loads it at its first idle moment (:func:`load`),
so that a server that has started answers with orjson from then on; a server
busy from its first moment loads it after ``PLAIN_DOCUMENTS`` documents
(json_c is as fast as orjson on small documents, but some 10-20× slower on
long lists of floats).

Every JSON document lite_serving writes is written here: :func:`dumps` for
answers (orjson's compact form; numpy values without ``tolist()``), with the
one rule the protocols do not share, how ``bytes`` are written, named by
``bytes_as``; :func:`dumps_reference` for the text of events, which is what
the reference's ``json.dumps`` writes.
"""

from lite_serving.speedups import choose

_plain, _ = choose("lite_serving.codecs.json_c", None, "JSON codec")

NOT_PLAIN = _plain.NOT_PLAIN if _plain is not None else object()
# for the start-up log
JSON_NAME = ("orjson (plain documents by the compiled json_c until orjson is loaded, at the "
             "first idle moment or when needed)" if _plain is not None else "orjson")
PLAIN_DOCUMENTS = 100   # read or written by json_c at most; then orjson is loaded where needed
orjson = None           # the orjson module once loaded: callers test this first
_plain_left = PLAIN_DOCUMENTS


def load():
    """The orjson module, imported on the first call."""
    global orjson
    if orjson is None:
        import orjson as module
        orjson = module
    return orjson


def _plain_codec():
    """json_c for one more document, or None (orjson is loaded, json_c is missing or has
    had its share)."""
    global _plain_left
    if orjson is None and _plain is not None and _plain_left > 0:
        _plain_left -= 1   # not atomic across threads: a document more or less, no matter
        return _plain
    return None


def loads_plain(data):
    """The document in ``data``, or ``NOT_PLAIN`` (see ``_plain_codec``, or it is not plain)."""
    codec = _plain_codec()
    return NOT_PLAIN if codec is None else codec.loads(data)


JSON_TYPE = b"application/json"
BASE64 = "base64"   # bytes → base64 text: answers to POST / and lite_serving's own documents
TEXT = "utf-8"      # bytes → UTF-8 text, bad bytes replaced: the v2 protocol's BYTES tensors


def is_ndarray(obj):
    cls = type(obj)  # subclasses (masked arrays, matrices) keep their own tolist()
    return cls.__name__ == "ndarray" and cls.__module__ == "numpy"


def _default(obj, bytes_as):
    """What orjson cannot write itself → what it can (``bytes_as``: BASE64 or TEXT)."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        if bytes_as is TEXT:
            return bytes(obj).decode("utf-8", "replace")
        import base64  # not at start-up: few answers hold bytes
        return base64.b64encode(obj).decode("ascii")
    if (is_ndarray(obj) and obj.dtype.kind in "biuf" and obj.dtype.itemsize <= 8 and obj.ndim
            and not (obj.flags.c_contiguous and obj.dtype.isnative)):
        # orjson writes only C-contiguous, native-order arrays; a copy is far cheaper than tolist()
        return obj.astype(obj.dtype.newbyteorder("="), order="C")
    tolist = getattr(obj, "tolist", None)  # numpy arrays orjson cannot take natively, numpy scalars
    if tolist is not None:
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


class _NumpyInside(Exception):
    """A numpy value met while encoding without orjson's numpy option."""


def _defaults(bytes_as):
    """orjson's ``default`` for the ``bytes_as`` policy, with its numpy option and without it."""
    def default(obj):
        return _default(obj, bytes_as)

    def default_without_numpy(obj):
        if type(obj).__module__ == "numpy":
            raise _NumpyInside
        return _default(obj, bytes_as)

    return default, default_without_numpy


_DEFAULTS = {BASE64: _defaults(BASE64), TEXT: _defaults(TEXT)}
_WITHOUT_NUMPY = {bytes_as: defaults[1] for bytes_as, defaults in _DEFAULTS.items()}


def dumps(obj, bytes_as=BASE64):
    """JSON bytes as orjson writes them; numpy values as lists and numbers, sets as lists, and
    bytes as ``bytes_as`` says: ``BASE64`` (answers) or ``TEXT`` (v2 BYTES tensors)."""
    if orjson is None:   # only until orjson is loaded
        body = dumps_plain(obj)
        if body is not None:
            return body
        load()
    if type(obj).__module__ != "numpy":
        # With its numpy option, orjson imports numpy the first time it meets any value it
        # hands to ``default`` (bytes, a set): without numpy values, do without the option.
        try:
            return orjson.dumps(obj, default=_WITHOUT_NUMPY[bytes_as],
                                option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError as exc:
            if not isinstance(exc.__cause__, _NumpyInside):
                raise
    return orjson.dumps(obj, default=_DEFAULTS[bytes_as][0],
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _reference_default(obj):
    tolist = getattr(obj, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps_reference(obj):
    """The UTF-8 of ``json.dumps(obj)``, as the reference writes an event's data (spaces after
    ``,`` and ``:``, non-ASCII escaped); numpy values as lists and numbers; bytes, sets and
    other objects raise TypeError."""
    import json  # events are rare: keep start-up light
    return json.dumps(obj, default=_reference_default).encode("utf-8")


def dumps_plain(obj):
    """``obj`` as orjson writes it, or None (see ``_plain_codec``, or ``obj`` is not plain)."""
    codec = _plain_codec()
    return None if codec is None else codec.dumps(obj)
