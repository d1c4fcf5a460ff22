"""The tensor codec in use: compiled (``lite_serving.codecs.codec_c``) or pure Python (``codec_py``).

Chosen once at import, as the request parser is (see ``speedups``). Both give
the same bytes, results and messages. Importing this module imports neither
numpy nor msgpack.
"""

from lite_serving.speedups import choose

_impl, CODEC_NAME = choose("lite_serving.codecs.codec_c", "lite_serving.codecs.codec_py", "codec")
COMPILED = _impl.__name__.endswith("codec_c")

pack_array = _impl.pack_array
split_length_prefixed = _impl.split_length_prefixed
join_length_prefixed = _impl.join_length_prefixed
split_map = _impl.split_map
copy_out = _impl.copy_out
