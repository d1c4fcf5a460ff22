"""The request parser in use: compiled (``lite_serving.parser_c``) or pure Python.

Chosen once at import. ``LITE_SERVING_PURE=1`` forces the pure-Python twin;
so does a missing compiled module. Both raise the same :class:`ParseError`.
"""

import os

from .parser_py import MAX_HEAD, MAX_HEADERS, MAX_TARGET, ParseError  # noqa: F401

_impl = None
_why_pure = "LITE_SERVING_PURE is set"
if os.environ.get("LITE_SERVING_PURE", "") in ("", "0"):
    try:
        from . import parser_c as _impl
    except ImportError:
        _impl = None
        _why_pure = ("no compiled parser beside " + os.path.dirname(os.path.abspath(__file__))
                     + "; a source checkout needs: python setup.py build_ext --inplace")
if _impl is None:
    from . import parser_py as _impl

COMPILED = _impl.__name__.endswith("parser_c")
PARSER_NAME = "compiled (Cython)" if COMPILED else f"pure Python ({_why_pure})"

parse_head = _impl.parse_head
ChunkedDecoder = _impl.ChunkedDecoder
parse_query = _impl.parse_query
unquote_path = _impl.unquote_path
