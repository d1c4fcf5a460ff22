"""The compiled twins under test: each one, or a skip that says how to build it.

Under ``LITE_SERVING_REQUIRE_COMPILED=1`` (CI sets it) a missing compiled module fails its
tests instead of skipping them.
"""

import importlib
import os

import pytest

REQUIRED = os.environ.get("LITE_SERVING_REQUIRE_COMPILED", "") not in ("", "0")


class Compiled:
    """The compiled module ``name``, imported once; :meth:`get` gives it or skips."""

    def __init__(self, name):
        try:
            self.module, self.missing = importlib.import_module(name), None
        except ImportError as exc:   # not compiled in this checkout
            self.module = None
            self.missing = f"{name} is not built ({exc}); run: python setup.py build_ext --inplace"

    def get(self):
        if self.module is None:
            if REQUIRED:
                pytest.fail(self.missing)
            pytest.skip(self.missing)
        return self.module


PARSER = Compiled("lite_serving.http.parser_c")
CODEC = Compiled("lite_serving.codecs.codec_c")
JSON = Compiled("lite_serving.codecs.json_c")
