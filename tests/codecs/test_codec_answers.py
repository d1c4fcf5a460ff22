"""numpy arrays returned by predict, over real sockets: MessagePack by the tensor codec, JSON by orjson.

Two servers serve the same predictor: one with the codec lite_serving picks
(compiled when built), one with ``LITE_SERVING_PURE=1``. Each answer is
compared with what ``tolist()`` of the same values gives: MessagePack in
values and Python types (float32 in 5 bytes), JSON with float32 values
that round-trip and NaN/Inf as ``null``.
"""

import base64
import math
import os
import re
import signal

import msgpack
import orjson
import pytest

np = pytest.importorskip("numpy")

from lite_serving.codecs import codec_py  # noqa: E402
from support.http_client import Connection  # noqa: E402
from support.servers import (  # noqa: E402
    start,
    stop,
    write_predictor,  # noqa: E402
)

# The values each case answers; run both by the predictor and by the tests.
VALUES = '''
import numpy as np


def values(case):
    rng = np.random.default_rng(3)
    special = [np.nan, np.inf, -np.inf, 1.5, -0.0]
    if case == "top":
        return rng.standard_normal(3000).astype(np.float32)
    if case == "top-int":
        return rng.integers(-70000, 70000, (30, 40))
    if case == "nested":
        boxes = rng.random((6, 4), dtype=np.float32)
        return {
            "boxes": boxes.T,
            "scores": [rng.random(5).astype(np.float16), rng.random((2, 3))],
            "labels": ["cat", "dög"],
            "ids": np.array([0, 127, 128, -33, 70000, -2**40, 2**62]),
            "mask": rng.random((3, 2)) > 0.5,
            "raw": b"\\x00\\xffbin",
            "count": np.int32(4),
            "pair": (1, 2.5),
            "swapped": np.arange(12, dtype=">i4").reshape(3, 4)[:, ::-1],
            "fortran": np.asfortranarray(rng.random((4, 3), dtype=np.float32)),
            "empty": np.zeros((2, 0), dtype=np.float32),
            "scalar": np.array(3.25, dtype=np.float32),
            "unsigned": np.array([2**64 - 1, 0, 200], dtype=np.uint64),
        }
    if case == "special":
        return {"f32": np.array(special, dtype=np.float32), "f16": np.array(special, dtype=np.float16),
                "f64": np.array(special), "swapped": np.array(special, dtype=">f4")[::-1],
                "python": [float("nan"), float("inf"), 0.5]}
    if case == "big":
        return {"y": rng.random(200_000, dtype=np.float32), "n": 200_000}
    if case == "too-large":  # its MessagePack would take more than 2**63 - 1 bytes
        return {"y": np.broadcast_to(np.float16(1), (2147614724, 1717882063))}
    raise KeyError(case)
'''

PREDICTOR = VALUES + '''

import sys

import lite_serving as serv


class Predictor:
    def predict(self, json):
        if json["case"] == "modules":
            return {"numpy": "numpy" in sys.modules}
        return values(json["case"])


if __name__ == "__main__":
    serv.run(Predictor)
'''

NO_NUMPY = '''
import sys

import lite_serving as serv


class Predictor:
    def predict(self, json):
        if json["case"] == "modules":
            return {"numpy": "numpy" in sys.modules, "msgpack": "msgpack" in sys.modules}
        return {"a": [1.5, 2, None, True], "b": b"raw", "c": {"d": (float("nan"), "é")}}


if __name__ == "__main__":
    serv.run(Predictor)
'''

CASES = ("top", "top-int", "nested", "special", "big")
_namespace = {}
exec(VALUES, _namespace)
values = _namespace["values"]
REQUIRE_COMPILED = os.environ.get("LITE_SERVING_REQUIRE_COMPILED", "") not in ("", "0")


@pytest.fixture(scope="module", params=["chosen", "pure"])
def server(request, tmp_path_factory):
    directory = write_predictor(tmp_path_factory.mktemp(f"codec_{request.param}"), PREDICTOR)
    env = {"LITE_SERVING_PURE": "1"} if request.param == "pure" else {"LITE_SERVING_PURE": "0"}
    srv = start(directory, None, "--log-level", "debug", env=env)  # the codec's line
    srv.kind = request.param
    yield srv
    stop(srv, signal.SIGTERM)


def ask(server, case, accept=None):
    headers = {"Host": "t", "Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    with Connection(server.host, server.port, timeout=30) as conn:
        conn.request("POST", "/", headers, orjson.dumps({"case": case}))
        resp = conn.read_response()
    assert resp.status == 200, resp
    return resp


def as_tolist(value):
    """What the answer must decode to: arrays and numpy scalars through tolist(), tuples as lists."""
    if isinstance(value, dict):
        return {k: as_tolist(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_tolist(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def typed(value):
    """The value with every type spelled out; NaN made comparable."""
    if isinstance(value, dict):
        return ["dict", {k: typed(v) for k, v in value.items()}]
    if isinstance(value, list):
        return ["list", [typed(v) for v in value]]
    if isinstance(value, float) and math.isnan(value):
        return ["float", "nan"]
    return [type(value).__name__, value]


def arrays_in(value):
    if isinstance(value, dict):
        return [a for v in value.values() for a in arrays_in(v)]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in arrays_in(v)]
    return [value] if type(value) is np.ndarray else []


# -- MessagePack ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_msgpack_answer_decodes_to_tolist(server, case):
    resp = ask(server, case, "application/msgpack")
    assert resp.media_type() == "application/msgpack"
    assert typed(msgpack.unpackb(resp.body)) == typed(as_tolist(values(case)))


def test_msgpack_array_answer_is_the_codecs_bytes(server):
    """A top-level array is its MessagePack form, float32 as float 32 (5 bytes each)."""
    array = values("top")
    body = ask(server, "top", "application/msgpack").body
    assert body == codec_py.pack_array(array)
    assert len(body) == 3 + 5 * array.size
    assert ask(server, "top-int", "application/msgpack").body == msgpack.packb(values("top-int").tolist())


@pytest.mark.parametrize("case", ["nested", "special", "big"])
def test_msgpack_arrays_inside_structures_take_the_codec(server, case):
    body = ask(server, case, "application/msgpack").body
    for array in arrays_in(values(case)):
        assert codec_py.pack_array(array) in body, array.dtype
    slow = msgpack.packb(as_tolist(values(case)), use_bin_type=True)
    assert len(body) < len(slow)  # float32 and float16 in 5 bytes, not 9


def test_msgpack_keeps_bytes_binary(server):
    decoded = msgpack.unpackb(ask(server, "nested", "application/x-msgpack").body)
    assert decoded["raw"] == b"\x00\xffbin" and decoded["labels"] == ["cat", "dög"]


def test_an_array_too_large_to_pack_is_an_error_answer(server):
    """The predictor's mistake costs its request only: a 500, and the next request is served
    (the size once wrapped around, and writing past the buffer crashed the worker)."""
    headers = {"Host": "t", "Content-Type": "application/json", "Accept": "application/msgpack"}
    with Connection(server.host, server.port, timeout=30) as conn:
        conn.request("POST", "/", headers, orjson.dumps({"case": "too-large"}))
        assert conn.read_response().status == 500
    assert msgpack.unpackb(ask(server, "nested", "application/msgpack").body)["count"] == 4


# -- JSON -----------------------------------------------------------------------------------------

def assert_json_matches(decoded, value, where="answer"):
    """JSON of ``value``: float32/float16 values round-trip, NaN/Inf are null, bytes base64."""
    if isinstance(value, dict):
        assert sorted(decoded) == sorted(value), where
        for key in value:
            assert_json_matches(decoded[key], value[key], f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        assert isinstance(decoded, list) and len(decoded) == len(value), where
        for i, (d, v) in enumerate(zip(decoded, value)):
            assert_json_matches(d, v, f"{where}[{i}]")
    elif isinstance(value, bytes):
        assert decoded == base64.b64encode(value).decode("ascii"), where
    elif isinstance(value, (np.ndarray, np.generic)):
        if value.dtype.kind != "f":
            assert decoded == value.tolist(), where
            return
        finite = np.isfinite(value)
        got = np.array(decoded, dtype=object).reshape(value.shape)
        assert all(g is None for g in got[~finite].tolist()), where
        assert np.array_equal(got[finite].astype(value.dtype), value[finite]), where
    elif isinstance(value, float) and not math.isfinite(value):
        assert decoded is None, where
    else:
        assert decoded == value and type(decoded) is type(value), where


@pytest.mark.parametrize("case", CASES)
def test_json_answer(server, case):
    resp = ask(server, case)
    assert resp.media_type() == "application/json"
    assert_json_matches(orjson.loads(resp.body), values(case))


def test_json_nan_and_infinity_are_null(server):
    decoded = ask(server, "special", "application/json").json()
    for key in ("f32", "f16", "f64"):
        assert decoded[key] == [None, None, None, 1.5, -0.0]
    assert decoded["swapped"] == [-0.0, 1.5, None, None, None]
    assert decoded["python"] == [None, None, 0.5]


def test_json_float32_is_written_short(server):
    """orjson writes float32 by its shortest text, which reads back as the same float32."""
    body = ask(server, "nested").body
    fortran = values("nested")["fortran"]
    for value in fortran.ravel()[:3]:
        assert repr(float(value)).encode() not in body  # not the widened float64 text
        assert str(value).encode() in body


# -- what runs ------------------------------------------------------------------------------------

def test_log_names_the_codec(server):
    m = re.search(r"tensor codec: (compiled \(Cython\)|pure Python \(([^)]*)\))", server.log)
    assert m, server.log
    if server.kind == "pure":
        assert m.group(2) == "LITE_SERVING_PURE is set"
    elif REQUIRE_COMPILED:
        assert m.group(1) == "compiled (Cython)", server.log


def test_numpy_stays_unimported(tmp_path):
    """Answers without numpy values, in JSON and MessagePack, never import numpy."""
    srv = start(write_predictor(tmp_path / "plain", NO_NUMPY), None)
    try:
        body = ask(srv, "x", "application/msgpack").body
        assert msgpack.unpackb(body)["c"]["d"][1] == "é"
        assert ask(srv, "x").json()["a"] == [1.5, 2, None, True]
        assert ask(srv, "modules").json() == {"numpy": False, "msgpack": True}
    finally:
        stop(srv, signal.SIGTERM)
