"""The request parser in use: compiled (``lite_serving.http.parser_c``) or pure Python.

Chosen once at import (see ``speedups``): ``LITE_SERVING_PURE=1`` forces the
pure-Python twin; so does a missing compiled module. Both raise the same
:class:`ParseError`.
"""

from lite_serving.codecs.codec import CODEC_NAME
from lite_serving.codecs.json_codec import JSON_NAME
from lite_serving.http.limits import MAX_HEAD, MAX_HEADERS, MAX_TARGET, ParseError  # noqa: F401
from lite_serving.speedups import choose

_impl, _how = choose("lite_serving.http.parser_c", "lite_serving.http.parser_py", "parser")
COMPILED = _impl.__name__.endswith("parser_c")
# the start-up log shows this; it names the tensor codec's and the JSON codec's choices too
PARSER_NAME = f"{_how}; tensor codec: {CODEC_NAME}; JSON: {JSON_NAME}"

parse_head = _impl.parse_head
ChunkedDecoder = _impl.ChunkedDecoder
parse_query = _impl.parse_query
unquote_path = _impl.unquote_path
if COMPILED:  # the access line's compiled twins (server/access_log.py holds their rules)
    access_text_lines, access_json_lines = _impl.access_text_lines, _impl.access_json_lines
