"""Request bodies, the ONNX model, and what a correct answer to each looks like."""

import json
import random
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .paths import TOOLS_DIR, WORK_DIR
from .servers import ONNX_MODEL, TLS_CERT, TLS_KEY

ECHO_DOC = {"inputs": [1, 2, 3, 4], "name": "echo"}
TENSOR_SIZE = 1_000_000  # elements of the array servers/tensor_*/predictor.py answer
MSGPACK_BODY_BYTES = 4 * 1024 * 1024
# A msgpack map {"data": <bin 32>}: fixmap(1) + fixstr "data" + bin32 marker and length.
_MSGPACK_HEAD = b"\x81\xa4data\xc6"
MSGPACK_DATA_BYTES = MSGPACK_BODY_BYTES - len(_MSGPACK_HEAD) - 4


@dataclass(frozen=True)
class Body:
    """A request body on disk (wrk reads it through lua/post.lua)."""

    path: Path
    content_type: str

    def read(self):
        return self.path.read_bytes()

    @property
    def size(self):
        return self.path.stat().st_size


BODIES = {
    "json": Body(WORK_DIR / "bodies" / "echo.json", "application/json"),
    "msgpack": Body(WORK_DIR / "bodies" / "data.msgpack", "application/msgpack"),
}


def write_bodies():
    """Write the small JSON body and the 4 MiB MessagePack body (deterministic content)."""
    BODIES["json"].path.parent.mkdir(parents=True, exist_ok=True)
    BODIES["json"].path.write_bytes(json.dumps(ECHO_DOC).encode())
    blob = random.Random(0).randbytes(MSGPACK_DATA_BYTES)
    BODIES["msgpack"].path.write_bytes(_MSGPACK_HEAD + struct.pack(">I", len(blob)) + blob)


def build_onnx_model(tools_python):
    """Build ``.work/onnx/model.onnx`` with the tools venv."""
    ONNX_MODEL.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(tools_python), str(TOOLS_DIR / "make_onnx_model.py"), str(ONNX_MODEL)], check=True)


def write_tls_certificate():
    """A self-signed ECDSA P-256 certificate for 127.0.0.1 (what both TLS servers present)."""
    TLS_CERT.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(TLS_KEY), "-out", str(TLS_CERT)],
        check=True, capture_output=True,
    )


def _is_echo(payload):
    return payload == ECHO_DOC


def _is_summary(payload):
    return payload == {"n": MSGPACK_DATA_BYTES}


def _is_tensor(payload):
    rows = payload.get("outputs") if isinstance(payload, dict) else None
    return isinstance(rows, list) and len(rows) == TENSOR_SIZE and all(0 <= v < 1 for v in rows[:1000])


def _is_onnx_output(payload):
    rows = payload.get("outputs") if isinstance(payload, dict) else None
    return bool(rows) and len(rows) == 1 and abs(sum(rows[0]) - 1.0) < 1e-3


@dataclass(frozen=True)
class AppLoad:
    """The body an app is benchmarked with and a check of its answer."""

    body: str
    accepts: object

    def check(self, status, response):
        """``None`` if ``(status, response)`` is a correct answer, else what is wrong."""
        if status != 200:
            return f"status {status}: {response[:200]!r}"
        try:
            payload = json.loads(response)
        except ValueError:
            return f"response is not JSON: {response[:200]!r}"
        return None if self.accepts(payload) else f"unexpected answer {response[:200]!r}"


APP_LOADS = {
    "echo": AppLoad("json", _is_echo),
    "msgpack": AppLoad("msgpack", _is_summary),
    "onnx": AppLoad("json", _is_onnx_output),
    "facade": AppLoad("json", _is_echo),
    "tensor": AppLoad("json", _is_tensor),
    "tls": AppLoad("json", _is_echo),
}
