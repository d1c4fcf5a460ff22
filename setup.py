"""Build: the pure-Python package, the optional Cython modules, and the alias .pth file.

The compiled parser (``_speedups/parser_c.pyx`` → ``lite_serving.http.parser_c``),
tensor codec (``_speedups/codec_c.pyx`` → ``lite_serving.codecs.codec_c``) and
plain-JSON codec of the first answers (``_speedups/json_c.pyx`` →
``lite_serving.codecs.json_c``) are optional: when one cannot be compiled the install
still succeeds and lite_serving runs on its pure-Python twin (orjson, for JSON). ``LITE_SERVING_NO_EXT=1`` skips
compiling.
"""

import os
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "lite_serving_alias.pth"


class OptionalBuildExt(build_ext):
    """Compile the Cython modules if possible; warn and go on without them otherwise."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers...
            self._skip(exc, "modules were")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc, ext.name + " was")

    @staticmethod
    def _skip(exc, what):
        sys.stderr.write(f"lite_serving: the compiled {what} not built ({exc}); "
                         "their pure-Python twins will be used\n")


class BuildPyWithPth(build_py):
    """Ship lite_serving_alias.pth at the top of site-packages (see lite_serving_alias.py).

    A wheel holds what ``build_lib`` holds; an editable wheel (``pip install
    -e .``) holds what ``install`` writes to its ``install_lib``, and nothing
    of ``build_lib``, so there the file goes to ``install_lib``.
    """

    def run(self):
        super().run()
        target = self.build_lib
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        os.makedirs(target, exist_ok=True)
        shutil.copy(os.path.join(HERE, PTH), os.path.join(target, PTH))


def extensions():
    if os.environ.get("LITE_SERVING_NO_EXT", "") not in ("", "0"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        sys.stderr.write("lite_serving: Cython is not available; the pure-Python parser and codec "
                         "will be used\n")
        return []
    built = []
    for package, name in (("http", "parser_c"), ("codecs", "codec_c"), ("codecs", "json_c")):
        source = os.path.join("_speedups", f"{name}.pyx")
        if not os.path.exists(os.path.join(HERE, source)):
            continue
        try:  # one module that Cython refuses must not cost the other
            # the compiler directives are in each .pyx's first line, which tools/cross and
            # tools/sanitizers read too when they run cython on it directly
            built += cythonize(
                [Extension(f"lite_serving.{package}.{name}", [source], extra_compile_args=["-O3"])])
        except Exception as exc:
            OptionalBuildExt._skip(exc, f"lite_serving.{package}.{name} was")
    return built

setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithPth},
)
