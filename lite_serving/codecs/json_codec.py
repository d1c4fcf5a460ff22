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
"""

import os

if os.environ.get("LITE_SERVING_PURE", "") in ("", "0"):
    try:
        from lite_serving.codecs import json_c as _plain
    except ImportError:
        _plain = None
else:
    _plain = None

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


def dumps_plain(obj):
    """``obj`` as orjson writes it, or None (see ``_plain_codec``, or ``obj`` is not plain)."""
    codec = _plain_codec()
    return None if codec is None else codec.dumps(obj)
