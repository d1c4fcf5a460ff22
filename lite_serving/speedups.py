"""Compiled modules and their pure-Python twins: which one of each pair is in use.

``_speedups/parser_c.pyx`` and ``_speedups/codec_c.pyx`` compile the rules of
``parser_py`` and ``codec_py``. Each pair is chosen once, at import:
``LITE_SERVING_PURE=1`` forces every pure twin; so does a compiled module that
is missing.
"""

import importlib
import os


def choose(compiled, pure, what):
    """``(module, how it was chosen)``: ``lite_serving.<compiled>`` when it loads, else ``<pure>``."""
    if os.environ.get("LITE_SERVING_PURE", "") not in ("", "0"):
        why = "LITE_SERVING_PURE is set"
    else:
        try:
            return importlib.import_module(f"{__package__}.{compiled}"), "compiled (Cython)"
        except ImportError:
            why = (f"no compiled {what} beside {os.path.dirname(os.path.abspath(__file__))}; "
                   "a source checkout needs: python setup.py build_ext --inplace")
    return importlib.import_module(f"{__package__}.{pure}"), f"pure Python ({why})"
