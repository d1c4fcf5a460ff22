"""Compiled modules and their pure-Python twins: which one of each pair is in use.

``_speedups/parser_c.pyx`` and ``_speedups/codec_c.pyx`` compile the rules of
``http/parser_py`` and ``codecs/codec_py``. Each pair is chosen once, at
import: ``LITE_SERVING_PURE=1`` forces every pure twin; so does a compiled
module that is missing. ``_speedups/json_c.pyx`` has no twin: without it,
orjson writes every JSON document (``codecs/json_codec``).
"""

import importlib
import os


def choose(compiled, pure, what):
    """``(module, how it was chosen)``: module ``compiled`` (dotted, absolute) when it loads, else
    ``pure``; ``pure`` None: a compiled module with no twin, None when it is not used."""
    missing = False
    if os.environ.get("LITE_SERVING_PURE", "") not in ("", "0"):
        why = "LITE_SERVING_PURE is set"
    else:
        try:
            return importlib.import_module(compiled), "compiled (Cython)"
        except ImportError:
            missing = True
    module = importlib.import_module(pure) if pure is not None else None
    if missing:
        beside = module if module is not None else importlib.import_module(compiled.rpartition(".")[0])
        where = beside.__file__
        why = (f"no compiled {what} beside {os.path.dirname(os.path.abspath(where))}; "
               "a source checkout needs: python setup.py build_ext --inplace")
    return module, f"pure Python ({why})" if module is not None else f"none ({why})"
