"""The version is written once, as ``__version__`` in lite_serving/__init__.py: pyproject.toml
declares it dynamic and setuptools reads it from the source without importing the package
(a build must not need numpy or msgpack to learn it)."""

import subprocess
import sys
from pathlib import Path

import pytest

import lite_serving

tomllib = pytest.importorskip("tomllib")   # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_takes_the_version_from_the_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "lite_serving.__version__"}


def test_setuptools_reads_the_version_without_importing_the_package(tmp_path):
    code = ("import sys\n"
            "from setuptools.config.expand import read_attr\n"
            "version = read_attr('lite_serving.__version__', root_dir=sys.argv[1])\n"
            "print(version, 'lite_serving' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [lite_serving.__version__, "False"]
