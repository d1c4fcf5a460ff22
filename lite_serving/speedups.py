"""Compiled modules and their pure-Python twins: which one of each pair is in use.

``_speedups/parser_c.pyx`` and ``_speedups/codec_c.pyx`` compile the rules of
``http/parser_py`` and ``codecs/codec_py``. Each pair is chosen once, at
import: ``LITE_SERVING_PURE=1`` forces every pure twin; so does a compiled
module that is missing.
"""

import importlib
import os


def choose(compiled, pure, what):
    """``(module, how it was chosen)``: module ``compiled`` (dotted, absolute) when it loads, else ``pure``."""
    missing = False
    if os.environ.get("LITE_SERVING_PURE", "") not in ("", "0"):
        why = "LITE_SERVING_PURE is set"
    else:
        try:
            return importlib.import_module(compiled), "compiled (Cython)"
        except ImportError:
            missing = True
    module = importlib.import_module(pure)
    if missing:
        why = (f"no compiled {what} beside {os.path.dirname(os.path.abspath(module.__file__))}; "
               "a source checkout needs: python setup.py build_ext --inplace")
    return module, f"pure Python ({why})"
