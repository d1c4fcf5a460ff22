"""The code's own rules, as CI checks them: ruff with the configuration in pyproject.toml.

pyflakes, pycodestyle's errors, import order, bugbear and a ceiling on a function's
complexity, over the package, the tests, the benchmarks, the tools and the examples.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def ruff():
    """The ruff of this interpreter's environment (the test extra installs it), else on PATH."""
    beside = Path(sys.executable).with_name("ruff")
    found = str(beside) if beside.exists() else shutil.which("ruff")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("ruff is not installed: pip install '.[test]'")
        pytest.skip("ruff is not installed: pip install '.[test]'")
    return found


def test_ruff_finds_nothing():
    done = subprocess.run([ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_reads_this_projects_rules(tmp_path):
    # a file breaking one rule of each family is found: the configuration is the one in use
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\n\ndef f(x):\n    for i in x:\n        yield lambda: i\n"
                   "    print(undefined)\n")
    done = subprocess.run([ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                           str(bad)], capture_output=True, text=True, timeout=60)
    for code in ("F401", "F821", "I001", "B023"):
        assert code in done.stdout, done.stdout
