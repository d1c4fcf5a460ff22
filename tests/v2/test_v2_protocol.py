"""The Open Inference Protocol (KServe v2) of ``lite_serving.v2.routes``.

Unit level: :func:`lite_serving.v2.routes.handle` called with bytes, answers compared
with onnxruntime run directly. Protocol level: NVIDIA's ``tritonclient.http``
against a server built on ``handle``; the server comes from the one fixture
``v2_server`` (a throwaway ``ThreadingHTTPServer`` today; swap it for a real
lite_serving process to test the integration).
"""

import http.server
import json
import math
import pathlib
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import orjson  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from lite_serving import __version__  # noqa: E402
from lite_serving.v2 import model as v2_model
from lite_serving.v2 import routes as v2
from lite_serving.v2 import tensors as v2_tensors

OPSET = [helper.make_opsetid("", 17)]

DTYPES = {  # v2 datatype → (ONNX element type, numpy dtype)
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


# -- models --------------------------------------------------------------------------------------

def save(graph, path):
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def build_affine(path):
    """Y = X * 2 + 1, float32 [batch, 3]."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["X", "two"], ["T"]), helper.make_node("Add", ["T", "one"], ["Y"])],
        "affine",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[two, one])
    return save(graph, path)


def build_add(path):
    """S = A + B, int64 [2, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["A", "B"], ["S"])], "add",
        [helper.make_tensor_value_info("A", TensorProto.INT64, [2, 2]),
         helper.make_tensor_value_info("B", TensorProto.INT64, [2, 2])],
        [helper.make_tensor_value_info("S", TensorProto.INT64, [2, 2])])
    return save(graph, path)


def build_two_outputs(path):
    """doubled = X + X (float32), positive = X > 0 (bool); a sequence output the protocol cannot carry."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["X", "X"], ["doubled"]),
         helper.make_node("Greater", ["X", "zero"], ["positive"]),
         helper.make_node("SequenceConstruct", ["X"], ["pieces"])],
        "two_outputs",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [None]),
         helper.make_tensor_value_info("positive", TensorProto.BOOL, [None]),
         helper.make_tensor_sequence_value_info("pieces", TensorProto.FLOAT, [None])],
        initializer=[zero])
    return save(graph, path)


def build_identity_all(path):
    """y_T = Identity(x_T) for every v2 datatype T, shape [n, 2]."""
    nodes, inputs, outputs = [], [], []
    for datatype, (element, _) in DTYPES.items():
        nodes.append(helper.make_node("Identity", [f"x_{datatype}"], [f"y_{datatype}"]))
        inputs.append(helper.make_tensor_value_info(f"x_{datatype}", element, ["n", 2]))
        outputs.append(helper.make_tensor_value_info(f"y_{datatype}", element, ["n", 2]))
    return save(helper.make_graph(nodes, "identity_all", inputs, outputs), path)


def build_reshape(path):
    """Reshape X (float32 [n]) to [2, 2]: fails inside onnxruntime unless n == 4."""
    target = helper.make_tensor("target", TensorProto.INT64, [2], [2, 2])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["X", "target"], ["Y"])], "reshape",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 2])],
        initializer=[target])
    return save(graph, path)


BUILDERS = {"affine": build_affine, "add": build_add, "two": build_two_outputs,
            "identity": build_identity_all, "reshape": build_reshape}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("v2_models")
    return {name: build(directory / f"{name}.onnx") for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def sessions(model_files):
    return {name: ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            for name, path in model_files.items()}


@pytest.fixture(scope="module")
def models(sessions):
    return {name: v2_model.V2Model(session, name) for name, session in sessions.items()}


# -- helpers -------------------------------------------------------------------------------------

def call(model, method, path, body=b"", headers=None):
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    return v2.handle(model, method, path, body, lambda name: lowered.get(name.lower()))


def infer(model, request, *chunks, headers=None, path=None):
    """POST a request (JSON, plus binary chunks when given) to the model's infer route."""
    header = orjson.dumps(request) if isinstance(request, dict) else request
    headers = dict(headers or {})
    if chunks:
        headers.setdefault(v2.HEADER_LENGTH, str(len(header)))
    return call(model, "POST", path or f"/v2/models/{model.name}/infer", header + b"".join(chunks),
                headers)


def decode(answer):
    """An infer answer → (header dict, {output name: numpy array})."""
    status, ctype, body, extra = answer
    assert status == 200, body
    lines = dict(line.split(": ", 1) for line in extra.decode().split("\r\n") if line)
    if v2.HEADER_LENGTH in lines:
        assert ctype == b"application/octet-stream"
        length = int(lines[v2.HEADER_LENGTH])
        header, binary = orjson.loads(body[:length]), body[length:]
    else:
        assert ctype == b"application/json"
        header, binary = orjson.loads(body), b""
    arrays, offset = {}, 0
    for out in header["outputs"]:
        dtype = DTYPES[out["datatype"]][1]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[out["name"]] = np.array(out["data"], dtype=dtype).reshape(out["shape"])
            continue
        assert "data" not in out
        raw = binary[offset:offset + size]
        offset += size
        if out["datatype"] == "BYTES":
            arrays[out["name"]] = np.array(split_bytes(raw), dtype=object).reshape(out["shape"])
        else:
            arrays[out["name"]] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")) \
                .reshape(out["shape"])
    assert offset == len(binary)
    return header, arrays


def join_bytes(items):
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def split_bytes(raw):
    items, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
    return items


def tensor(name, array, datatype, binary=False, shape=None):
    entry = {"name": name, "shape": list(shape if shape is not None else array.shape),
             "datatype": datatype}
    if binary:
        raw = join_bytes([s.encode() for s in array.ravel()]) if datatype == "BYTES" \
            else array.astype(array.dtype.newbyteorder("<")).tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    entry["data"] = array.ravel().tolist()
    return entry, b""


def error_of(answer, status=400):
    got, ctype, body, _ = answer
    assert got == status, body
    assert ctype == b"application/json"
    return orjson.loads(body)["error"]


def affine_request(x, **extra):
    return {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **extra}


X = np.arange(6, dtype=np.float32).reshape(2, 3) / 4


# -- routes and metadata -------------------------------------------------------------------------

def test_server_metadata_and_health(models):
    m = models["affine"]
    status, ctype, body, _ = call(m, "GET", "/v2")
    assert (status, ctype) == (200, b"application/json")
    assert orjson.loads(body) == {"name": "lite_serving", "version": __version__,
                                  "extensions": ["binary_tensor_data"]}
    for probe in ("live", "ready"):
        status, _, body, _ = call(m, "GET", f"/v2/health/{probe}")
        assert status == 200 and orjson.loads(body) == {probe: True}
    assert call(m, "HEAD", "/v2/health/live")[0] == 200
    status, _, _, extra = call(m, "POST", "/v2/health/ready")
    assert status == 405 and b"Allow: GET, HEAD\r\n" in extra


def test_non_v2_paths_are_left_to_the_router(models):
    m = models["affine"]
    for path in ("/", "/v1/models/affine", "/v2x", "/healthz", "/v20/models"):
        assert call(m, "POST", path) is None
        assert not v2.is_infer(path)
    assert error_of(call(m, "GET", "/v2/nothing/here"), 404).startswith("no v2 route")
    assert call(m, "GET", "/v2/models")[0] == 404


def test_is_infer():
    assert v2.is_infer("/v2/models/m/infer")
    assert v2.is_infer("/v2/models/m/versions/3/infer")
    assert v2.is_infer("/v2/models/m/infer?x=1")
    for path in ("/v2/models/m", "/v2/models/m/ready", "/v2/models/m/versions/1", "/v2", "/",
                 "/v2/models/infer", "/v2/models/m/infer/x"):
        assert not v2.is_infer(path), path


def test_model_metadata(models):
    status, ctype, body, _ = call(models["affine"], "GET", "/v2/models/affine")
    assert (status, ctype) == (200, b"application/json")
    assert orjson.loads(body) == {
        "name": "affine", "versions": ["1"], "platform": "onnxruntime_onnx",
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "Y", "datatype": "FP32", "shape": [-1, 3]}]}
    assert orjson.loads(body) == models["affine"].metadata()
    versioned = call(models["affine"], "GET", "/v2/models/affine/versions/1")
    assert versioned[:2] == (200, b"application/json") and versioned[2] == body
    meta = models["add"].metadata()
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == \
        [("A", "INT64", [2, 2]), ("B", "INT64", [2, 2])]
    meta = models["two"].metadata()
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == \
        [("doubled", "FP32", [-1]), ("positive", "BOOL", [-1]), ("pieces", "seq(tensor(float))", [])]
    meta = models["identity"].metadata()
    assert [t["datatype"] for t in meta["inputs"]] == list(DTYPES)
    assert [t["datatype"] for t in meta["outputs"]] == list(DTYPES)


def test_model_ready(models):
    m = models["affine"]
    for path in ("/v2/models/affine/ready", "/v2/models/affine/versions/1/ready"):
        status, _, body, _ = call(m, "GET", path)
        assert status == 200 and orjson.loads(body) == {"name": "affine", "ready": True}


def test_unknown_model_and_version_are_404(models):
    m = models["affine"]
    for method, path in (("GET", "/v2/models/nope"), ("GET", "/v2/models/nope/ready"),
                         ("POST", "/v2/models/nope/infer"), ("GET", "/v2/models/nope/versions/1")):
        message = error_of(call(m, method, path, orjson.dumps(affine_request(X))), 404)
        assert "'nope'" in message and "'affine'" in message
    message = error_of(call(m, "GET", "/v2/models/affine/versions/2/ready"), 404)
    assert "'2'" in message and "'1'" in message
    assert call(m, "POST", "/v2/models/affine/versions/7/infer", orjson.dumps(affine_request(X)))[0] == 404


def test_wrong_methods_are_405(models):
    m = models["affine"]
    for method in ("GET", "PUT", "HEAD"):
        status, _, _, extra = call(m, method, "/v2/models/affine/infer")
        assert status == 405 and extra == b"Allow: POST\r\n"
    status, _, _, extra = call(m, "POST", "/v2/models/affine")
    assert status == 405 and extra == b"Allow: GET, HEAD\r\n"
    assert call(m, "DELETE", "/v2/models/affine/ready")[0] == 405
    assert call(m, "POST", "/v2")[0] == 405


def test_percent_encoded_model_name(sessions):
    m = v2_model.V2Model(sessions["affine"], "my model/a", version=3)
    assert m.version == "3"
    assert call(m, "GET", "/v2/models/my%20model%2Fa/versions/3/ready")[0] == 200
    assert v2.is_infer("/v2/models/my%20model%2Fa/infer")
    header, out = decode(infer(m, affine_request(X), path="/v2/models/my%20model%2Fa/infer"))
    assert header["model_name"] == "my model/a" and header["model_version"] == "3"


# -- inference: JSON ------------------------------------------------------------------------------

def test_infer_json_matches_onnxruntime(models, sessions):
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    header, out = decode(infer(models["affine"], affine_request(x, id="req-7")))
    assert header["model_name"] == "affine" and header["model_version"] == "1"
    assert header["id"] == "req-7"
    assert header["outputs"][0]["datatype"] == "FP32" and header["outputs"][0]["shape"] == [5, 3]
    np.testing.assert_array_equal(out["Y"], sessions["affine"].run(None, {"X": x})[0])


def test_infer_without_id_has_no_id(models):
    header, _ = decode(infer(models["affine"], affine_request(X)))
    assert "id" not in header


def test_infer_versioned_path(models, sessions):
    _, out = decode(infer(models["affine"], affine_request(X), path="/v2/models/affine/versions/1/infer"))
    np.testing.assert_array_equal(out["Y"], sessions["affine"].run(None, {"X": X})[0])


def test_nested_data_is_accepted(models, sessions):
    a = np.array([[1, 2], [3, 4]], dtype=np.int64)
    b = np.array([[10, 20], [30, 40]], dtype=np.int64)
    request = {"inputs": [{"name": "A", "shape": [2, 2], "datatype": "INT64", "data": a.tolist()},
                          {"name": "B", "shape": [2, 2], "datatype": "INT64", "data": b.ravel().tolist()}]}
    header, out = decode(infer(models["add"], request))
    assert header["outputs"][0]["data"] == [11, 22, 33, 44]  # flat, row-major
    np.testing.assert_array_equal(out["S"], sessions["add"].run(None, {"A": a, "B": b})[0])


def test_output_selection(models, sessions):
    x = np.array([-1.5, 0.0, 2.5], dtype=np.float32)
    request = {"inputs": [tensor("X", x, "FP32")[0]], "outputs": [{"name": "positive"}]}
    header, out = decode(infer(models["two"], request))
    assert [o["name"] for o in header["outputs"]] == ["positive"]
    assert header["outputs"][0]["datatype"] == "BOOL" and header["outputs"][0]["data"] == [False, False, True]
    request["outputs"] = [{"name": "positive"}, {"name": "doubled"}]
    header, out = decode(infer(models["two"], request))
    assert [o["name"] for o in header["outputs"]] == ["positive", "doubled"]
    doubled, positive, _ = sessions["two"].run(None, {"X": x})
    np.testing.assert_array_equal(out["doubled"], doubled)
    np.testing.assert_array_equal(out["positive"], positive)


def test_outputs_the_protocol_cannot_carry(models):
    x = np.array([1.0], dtype=np.float32)
    header, _ = decode(infer(models["two"], {"inputs": [tensor("X", x, "FP32")[0]]}))
    assert [o["name"] for o in header["outputs"]] == ["doubled", "positive"]  # the sequence left out
    message = error_of(infer(models["two"], {"inputs": [tensor("X", x, "FP32")[0]],
                                             "outputs": [{"name": "pieces"}]}))
    assert "pieces" in message and "seq(tensor(float))" in message


def test_unknown_and_duplicate_output_are_400(models):
    message = error_of(infer(models["affine"], affine_request(X, outputs=[{"name": "Z"}])))
    assert "unknown output 'Z'" in message and "Y" in message
    message = error_of(infer(models["affine"], affine_request(X, outputs=[{"name": "Y"}, {"name": "Y"}])))
    assert "'Y'" in message and "more than once" in message
    assert error_of(infer(models["affine"], affine_request(X, outputs=[{"nom": "Y"}])))
    assert error_of(infer(models["affine"], affine_request(X, outputs={"name": "Y"})))
    assert "binary_data" in error_of(infer(models["affine"], affine_request(
        X, outputs=[{"name": "Y", "parameters": {"binary_data": "yes"}}])))


def every_datatype(seed, strings, scale, binary):
    """Inputs of the identity model: (feeds, request entries, binary chunks), shape [3, 2].

    Integers at their limits, floats ``scale`` times normal samples, BYTES ``strings``.
    """
    rng = np.random.default_rng(seed)
    feeds, entries, chunks = {}, [], []
    for datatype, (_, dtype) in DTYPES.items():
        if datatype == "BYTES":
            array = np.array(strings, dtype=object)
        elif datatype == "BOOL":
            array = rng.random((3, 2)) > 0.5
        elif datatype.startswith("FP"):
            array = (rng.standard_normal((3, 2)) * scale).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = np.array([[info.min, info.max], [0, 1], [7, info.max - 1]], dtype=dtype)
        feeds[f"x_{datatype}"] = array
        entry, raw = tensor(f"x_{datatype}", array, datatype, binary=binary)
        entries.append(entry)
        chunks.append(raw)
    return feeds, entries, chunks


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_every_datatype_round_trips(models, sessions, binary_in, binary_out):
    feeds, entries, chunks = every_datatype(1, [["a", "héllo"], ["", "z" * 300], ["x", "y"]], 100,
                                            binary_in)
    request = {"inputs": entries, "outputs": [{"name": f"y_{d}", "parameters": {"binary_data": binary_out}}
                                              for d in DTYPES]}
    header, out = decode(infer(models["identity"], request, *chunks if binary_in else ()))
    expected = dict(zip([o.name for o in sessions["identity"].get_outputs()],
                        sessions["identity"].run(None, feeds)))
    for entry in header["outputs"]:
        name = entry["name"]
        assert entry["datatype"] == name[2:]
        assert ("data" in entry) != binary_out
        np.testing.assert_array_equal(out[name], expected[name])
        np.testing.assert_array_equal(out[name], feeds["x" + name[1:]])


def test_scalar_like_zero_size_input(models, sessions):
    x = np.zeros((0, 3), dtype=np.float32)
    header, out = decode(infer(models["affine"], affine_request(x)))
    assert header["outputs"][0]["shape"] == [0, 3] and header["outputs"][0]["data"] == []
    entry, raw = tensor("X", x, "FP32", binary=True)
    _, out = decode(infer(models["affine"], {"inputs": [entry], "parameters": {"binary_data_output": True}},
                          raw))
    assert out["Y"].shape == (0, 3)


def test_nan_in_json_is_accepted(models):
    """orjson refuses NaN and Infinity; the standard library's json takes them."""
    body = (b'{"inputs":[{"name":"X","shape":[1,3],"datatype":"FP32","data":[NaN,1,Infinity]}],'
            b'"parameters":{"binary_data_output":true}}')
    _, out = decode(infer(models["affine"], body))
    assert np.isnan(out["Y"][0, 0]) and out["Y"][0, 1] == 3 and out["Y"][0, 2] == np.inf


# -- inference: binary tensor data ---------------------------------------------------------------

def test_binary_inputs_and_outputs(models, sessions):
    x = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    entry, raw = tensor("X", x, "FP32", binary=True)
    request = {"id": "b1", "inputs": [entry], "outputs": [{"name": "Y", "parameters": {"binary_data": True}}]}
    answer = infer(models["affine"], request, raw)
    status, ctype, body, extra = answer
    assert ctype == b"application/octet-stream"
    length = int(extra.decode().split(": ")[1])
    assert extra == b"Inference-Header-Content-Length: %d\r\n" % length
    header = orjson.loads(body[:length])
    assert header["outputs"] == [{"name": "Y", "datatype": "FP32", "shape": [4, 3],
                                  "parameters": {"binary_data_size": 48}}]
    assert len(body) == length + 48
    _, out = decode(answer)
    np.testing.assert_array_equal(out["Y"], sessions["affine"].run(None, {"X": x})[0])


def test_binary_data_output_parameter_and_per_output_override(models, sessions):
    x = np.array([-2.0, 3.0], dtype=np.float32)
    request = {"inputs": [tensor("X", x, "FP32")[0]], "parameters": {"binary_data_output": True}}
    header, out = decode(infer(models["two"], request))
    assert all("data" not in o for o in header["outputs"])
    request["outputs"] = [{"name": "doubled", "parameters": {"binary_data": False}}, {"name": "positive"}]
    header, out = decode(infer(models["two"], request))
    assert header["outputs"][0]["data"] == [-4.0, 6.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 2}
    doubled, positive, _ = sessions["two"].run(None, {"X": x})
    np.testing.assert_array_equal(out["positive"], positive)


def test_mixed_json_and_binary_inputs(models, sessions):
    a = np.array([[1, -2], [3, 4]], dtype=np.int64)
    b = np.array([[5, 6], [7, 8]], dtype=np.int64)
    entry_a, _ = tensor("A", a, "INT64")
    entry_b, raw = tensor("B", b, "INT64", binary=True)
    _, out = decode(infer(models["add"], {"inputs": [entry_a, entry_b]}, raw))
    np.testing.assert_array_equal(out["S"], sessions["add"].run(None, {"A": a, "B": b})[0])


def test_unaligned_binary_input(models, sessions):
    """The JSON header's length makes the binary part start anywhere; the answer must not care."""
    x = np.random.default_rng(3).standard_normal((3, 3)).astype(np.float32)
    entry, raw = tensor("X", x, "FP32", binary=True)
    for pad in range(4):
        header = orjson.dumps({"inputs": [entry], "id": "p" * pad})
        _, out = decode(infer(models["affine"], header, raw))
        np.testing.assert_array_equal(out["Y"], sessions["affine"].run(None, {"X": x})[0])


# -- validation -----------------------------------------------------------------------------------

def test_malformed_requests_are_400(models):
    m = models["affine"]
    assert "not valid JSON" in error_of(infer(m, b"{not json"))
    assert "not valid JSON" in error_of(infer(m, b""))
    assert "JSON object" in error_of(infer(m, b"[1, 2]"))
    assert "no \"inputs\"" in error_of(infer(m, b"{}"))
    assert "list" in error_of(infer(m, b'{"inputs": {"X": [1, 2, 3]}}'))
    assert "inputs[0]" in error_of(infer(m, b'{"inputs": [7]}'))
    assert "inputs[0]" in error_of(infer(m, b'{"inputs": [{"shape": [1, 3]}]}'))
    assert "parameters" in error_of(infer(m, affine_request(X, parameters=[1])))


def test_unknown_missing_duplicate_inputs_are_400(models):
    a = tensor("A", np.ones((2, 2), dtype=np.int64), "INT64")[0]
    b = tensor("B", np.ones((2, 2), dtype=np.int64), "INT64")[0]
    c = dict(a, name="C")
    message = error_of(infer(models["add"], {"inputs": [a, b, c]}))
    assert "unknown input 'C'" in message and "A (INT64 [2, 2])" in message
    message = error_of(infer(models["add"], {"inputs": [a]}))
    assert "missing input" in message and "B (INT64 [2, 2])" in message
    message = error_of(infer(models["add"], {"inputs": [a, b, a]}))
    assert "'A'" in message and "more than once" in message
    assert "missing input" in error_of(infer(models["add"], {"inputs": []}))


def test_wrong_datatype_is_400(models):
    request = affine_request(X)
    request["inputs"][0]["datatype"] = "FP64"
    message = error_of(infer(models["affine"], request))
    assert "'X'" in message and "FP64" in message and "expects FP32" in message
    del request["inputs"][0]["datatype"]
    assert "expects FP32" in error_of(infer(models["affine"], request))


def test_wrong_shape_is_400(models):
    request = affine_request(X)
    request["inputs"][0]["shape"] = [6]
    message = error_of(infer(models["affine"], request))
    assert "'X'" in message and "[6]" in message and "[-1, 3]" in message
    request["inputs"][0]["shape"] = [3, 2]  # right count, fixed dimension wrong
    assert "[-1, 3]" in error_of(infer(models["affine"], request))
    a = tensor("A", np.ones((2, 3), dtype=np.int64), "INT64")[0]
    b = tensor("B", np.ones((2, 2), dtype=np.int64), "INT64")[0]
    message = error_of(infer(models["add"], {"inputs": [a, b]}))
    assert "'A'" in message and "[2, 3]" in message and "[2, 2]" in message
    for bad in ("2,3", [2, -3], [2, 1.5], [True, 3], None):
        request["inputs"][0]["shape"] = bad
        assert "shape" in error_of(infer(models["affine"], request))


def test_dynamic_dimension_takes_any_size(models, sessions):
    for batch in (1, 7, 64):
        x = np.ones((batch, 3), dtype=np.float32)
        _, out = decode(infer(models["affine"], affine_request(x)))
        np.testing.assert_array_equal(out["Y"], sessions["affine"].run(None, {"X": x})[0])


def test_element_count_and_element_types_are_checked(models):
    request = affine_request(X)
    request["inputs"][0]["data"] = [1.0] * 5
    message = error_of(infer(models["affine"], request))
    assert "'X'" in message and "5 elements" in message and "needs 6" in message
    request["inputs"][0]["data"] = [[1, 2, 3], [4, 5]]
    assert "'X'" in error_of(infer(models["affine"], request))
    request["inputs"][0]["data"] = ["1", "2", "3", "4", "5", "6"]
    assert "must be numbers" in error_of(infer(models["affine"], request))
    request["inputs"][0]["data"] = [True] * 6
    assert "must be numbers" in error_of(infer(models["affine"], request))
    request["inputs"][0]["data"] = [1, None, 3, 4, 5, 6]
    assert "'X'" in error_of(infer(models["affine"], request))
    del request["inputs"][0]["data"]
    assert "neither" in error_of(infer(models["affine"], request))
    a = {"name": "A", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3.5, 4]}
    b = {"name": "B", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}
    assert "must be integers" in error_of(infer(models["add"], {"inputs": [a, b]}))
    a["data"] = [1, 2, 3, 2 ** 64]  # past 64 bits: orjson reads it as a float
    assert "'A'" in error_of(infer(models["add"], json.dumps({"inputs": [a, b]}).encode()))
    with pytest.raises(v2.ServingError) as caught:  # a Python int past 64 bits stays one
        models["add"].simple_infer({"inputs": {"A": [[1, 2], [3, 2 ** 64]], "B": [[1, 2], [3, 4]]}})
    assert "outside INT64" in caught.value.message


def test_integer_range_and_bool_and_bytes_json_checks(models):
    def request(datatype, data):
        entries = []
        for d, (_, dtype) in DTYPES.items():
            value = data if d == datatype else (
                [["a", "b"]] if d == "BYTES" else np.zeros((1, 2), dtype=dtype).tolist())
            entries.append({"name": f"x_{d}", "shape": [1, 2], "datatype": d, "data": value})
        return {"inputs": entries}

    assert "outside UINT8" in error_of(infer(models["identity"], request("UINT8", [1, 256])))
    assert "outside INT8" in error_of(infer(models["identity"], request("INT8", [-129, 0])))
    assert "outside UINT64" in error_of(infer(models["identity"], request("UINT64", [-1, 0])))
    assert "true/false" in error_of(infer(models["identity"], request("BOOL", [0, 1])))
    assert "strings" in error_of(infer(models["identity"], request("BYTES", [1, 2])))
    _, out = decode(infer(models["identity"], request("UINT64", [2 ** 64 - 1, 0])))
    assert out["y_UINT64"][0, 0] == 2 ** 64 - 1


def test_binary_sizes_are_checked(models):
    x = np.ones((2, 3), dtype=np.float32)
    entry, raw = tensor("X", x, "FP32", binary=True)
    bad = dict(entry, parameters={"binary_data_size": 20})
    message = error_of(infer(models["affine"], {"inputs": [bad]}, raw[:20]))
    assert "'X'" in message and "binary_data_size 20" in message and "needs 24 bytes" in message
    message = error_of(infer(models["affine"], {"inputs": [entry]}, raw[:10]))
    assert "'X'" in message and "only 10 bytes" in message
    message = error_of(infer(models["affine"], {"inputs": [entry]}, raw + b"\0" * 4))
    assert "28 bytes" in message and "declare 24" in message
    both = dict(entry, data=x.ravel().tolist())
    assert "both" in error_of(infer(models["affine"], {"inputs": [both]}, raw))
    for size in (-1, "24", 2.5, True):
        weird = dict(entry, parameters={"binary_data_size": size})
        assert "binary_data_size" in error_of(infer(models["affine"], {"inputs": [weird]}, raw))
    # binary inputs without Inference-Header-Content-Length: the whole body is JSON
    message = error_of(call(models["affine"], "POST", "/v2/models/affine/infer",
                            orjson.dumps({"inputs": [entry]})))
    assert "only 0 bytes" in message


def test_binary_bool_and_bytes_contents_are_checked(models):
    def request(datatype, raw, shape=(1, 2)):
        entries, chunks = [], []
        for d, (_, dtype) in DTYPES.items():
            if d == datatype:
                entries.append({"name": f"x_{d}", "shape": list(shape), "datatype": d,
                                "parameters": {"binary_data_size": len(raw)}})
                chunks.append(raw)
            else:
                value = np.array([["a", "b"]], dtype=object) if d == "BYTES" else np.zeros((1, 2), dtype)
                entry, chunk = tensor(f"x_{d}", value, d, binary=True)
                entries.append(entry)
                chunks.append(chunk)
        return infer(models["identity"], {"inputs": entries}, *chunks)

    assert "0 or 1" in error_of(request("BOOL", b"\x01\x02"))
    assert "ends inside" in error_of(request("BYTES", join_bytes([b"a"]) + b"\x01\x00"))
    assert "runs past" in error_of(request("BYTES", join_bytes([b"a"]) + b"\x09\x00\x00\x00ab"))
    assert "1 BYTES elements" in error_of(request("BYTES", join_bytes([b"a"])))
    assert "UTF-8" in error_of(request("BYTES", join_bytes([b"a", b"\xff"])))
    _, out = decode(request("BYTES", join_bytes([b"", "ü".encode()])))
    assert out["y_BYTES"].tolist() == [["", "ü"]]


def test_header_length_is_checked(models):
    body = orjson.dumps(affine_request(X))
    for value in ("abc", "-1", "1.5", "", "١٢"):
        message = error_of(infer(models["affine"], body, headers={v2.HEADER_LENGTH: value}))
        assert v2.HEADER_LENGTH in message
    message = error_of(infer(models["affine"], body, headers={v2.HEADER_LENGTH: str(len(body) + 1)}))
    assert "larger" in message or "only" in message
    assert infer(models["affine"], body, headers={v2.HEADER_LENGTH: f" {len(body)} "})[0] == 200


def test_compressed_bodies_are_415(models):
    body = orjson.dumps(affine_request(X))
    assert "gzip" in error_of(infer(models["affine"], body, headers={"Content-Encoding": "gzip"}), 415)
    assert infer(models["affine"], body, headers={"Content-Encoding": "identity"})[0] == 200


def test_onnxruntime_failure_is_500(models):
    x = np.ones(3, dtype=np.float32)
    message = error_of(infer(models["reshape"], {"inputs": [tensor("X", x, "FP32")[0]]}), 500)
    assert message.startswith("onnxruntime failed")
    _, out = decode(infer(models["reshape"], {"inputs": [tensor("X", np.ones(4, np.float32), "FP32")[0]]}))
    assert out["Y"].shape == (2, 2)


def test_unexpected_errors_are_500(sessions):
    class Broken(v2_model.V2Model):
        def prepare(self, request, binary=None):
            raise KeyError("boom")

    m = Broken(sessions["affine"], "affine")
    assert "KeyError" in error_of(infer(m, affine_request(X)), 500)


def test_shared_memory_is_refused(models):
    request = affine_request(X)
    request["inputs"][0]["parameters"] = {"shared_memory_region": "r"}
    assert "shared memory" in error_of(infer(models["affine"], request))


# -- simple_infer (POST / for curl users) --------------------------------------------------------

def test_simple_infer(models, sessions):
    x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    result = models["affine"].simple_infer({"inputs": {"X": x}})
    np.testing.assert_array_equal(result["outputs"]["Y"],
                                  sessions["affine"].run(None, {"X": np.array(x, np.float32)})[0])
    result = models["add"].simple_infer({"inputs": {"A": [[1, 2], [3, 4]], "B": [[1, 1], [1, 1]]}})
    assert result["outputs"]["S"].tolist() == [[2, 3], [4, 5]]


@pytest.mark.parametrize("obj, words", [
    ([1, 2], "POST / takes"),
    ({"X": [[1, 2, 3]]}, "POST / takes"),
    ({"inputs": {"Z": [[1, 2, 3]]}}, "unknown input 'Z'"),
    ({"inputs": {}}, "missing input"),
    ({"inputs": {"X": [1, 2, 3]}}, "[-1, 3]"),
    ({"inputs": {"X": [[1, 2], [3]]}}, "'X'"),
    ({"inputs": {"X": [["a", "b", "c"]]}}, "must be numbers"),
])
def test_simple_infer_bad_input_is_400(models, obj, words):
    with pytest.raises(v2.ServingError) as caught:
        models["affine"].simple_infer(obj)
    assert caught.value.status_code == 400 and words in caught.value.message


# -- cost ----------------------------------------------------------------------------------------

def test_import_needs_neither_numpy_nor_onnxruntime():
    code = ("import sys, lite_serving.v2.routes; "
            "print(sorted(m for m in ('numpy', 'onnxruntime') if m in sys.modules))")
    root = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root)
    assert out.stdout.strip() == "[]"


def test_encode_time_of_a_million_float32(capsys):
    """Printed, not asserted: encoding a 1M-element float32 output as JSON and as binary."""
    array = np.random.default_rng(4).random((1000, 1000), dtype=np.float32)

    def best(fn, repeat=3):
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - began)
        return min(times) * 1000, result

    def as_json():
        entry = {"name": "Y", "datatype": "FP32", "shape": [1000, 1000], "data": v2_tensors._to_json_data(array, "FP32")}
        return v2.encode_infer_response({"model_name": "m", "outputs": [entry]}, [])

    def as_binary():
        part = v2_tensors._to_binary(array, "FP32")
        entry = {"name": "Y", "datatype": "FP32", "shape": [1000, 1000],
                 "parameters": {"binary_data_size": len(part)}}
        return v2.encode_infer_response({"model_name": "m", "outputs": [entry]}, [part])

    def as_tolist():
        return orjson.dumps({"outputs": [{"data": array.ravel().tolist()}]})

    json_ms, (_, json_body, _) = best(as_json)
    binary_ms, (_, binary_body, _) = best(as_binary)
    tolist_ms, tolist_body = best(as_tolist)
    assert np.array_equal(np.array(orjson.loads(json_body)["outputs"][0]["data"], np.float32), array.ravel())
    with capsys.disabled():
        print(f"\n1M float32 output: JSON (orjson numpy) {json_ms:.1f} ms, {len(json_body) / 1e6:.1f} MB; "
              f"JSON via tolist {tolist_ms:.1f} ms, {len(tolist_body) / 1e6:.1f} MB; "
              f"binary {binary_ms:.1f} ms, {len(binary_body) / 1e6:.1f} MB")


# -- protocol level: tritonclient over real HTTP ------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0]
        answer = v2.handle(self.server.model, self.command, path, body, self.headers.get)
        if answer is None:
            answer = (404, b"application/json", b'{"error": "not a v2 route"}', b"")
        status, ctype, data, extra = answer
        self.send_response(status)
        self.send_header("Content-Type", ctype.decode("latin-1"))
        self.send_header("Content-Length", str(len(data)))
        for line in extra.decode("latin-1").split("\r\n"):
            if line:
                name, _, value = line.partition(":")
                self.send_header(name, value.strip())
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def v2_server():
    """``start(onnx_path, name) -> "host:port"`` of a server speaking v2 for that model.

    The one place to swap: a real lite_serving process serving the same file
    would make every protocol test below an integration test.
    """
    servers = []

    def start(onnx_path, name):
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.model = v2_model.V2Model(session, name)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def triton(v2_server, model_files):
    httpclient = pytest.importorskip("tritonclient.http")
    clients = {}

    def client(name):
        if name not in clients:
            clients[name] = httpclient.InferenceServerClient(v2_server(model_files[name], name))
        return clients[name]

    yield httpclient, client
    for c in clients.values():
        c.close()


def test_triton_health_and_metadata(triton):
    httpclient, client = triton
    c = client("affine")
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("affine") and c.is_model_ready("affine", model_version="1")
    assert not c.is_model_ready("other")
    assert c.get_server_metadata() == {"name": "lite_serving", "version": __version__,
                                       "extensions": ["binary_tensor_data"]}
    meta = c.get_model_metadata("affine")
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "Y", "datatype": "FP32", "shape": [-1, 3]}]
    assert c.get_model_metadata("affine", model_version="1") == meta


@pytest.mark.parametrize("binary", [False, True])
def test_triton_infer_affine(triton, sessions, binary):
    httpclient, client = triton
    x = np.random.default_rng(5).standard_normal((8, 3)).astype(np.float32)
    data = httpclient.InferInput("X", list(x.shape), "FP32")
    data.set_data_from_numpy(x, binary_data=binary)
    result = client("affine").infer("affine", [data], request_id="t1",
                                    outputs=[httpclient.InferRequestedOutput("Y", binary_data=binary)])
    assert result.get_response()["id"] == "t1"
    assert ("data" in result.get_output("Y")) != binary
    np.testing.assert_array_equal(result.as_numpy("Y"), sessions["affine"].run(None, {"X": x})[0])


def test_triton_infer_default_outputs_and_version(triton, sessions):
    """No outputs named: tritonclient asks for every output in binary (binary_data_output)."""
    httpclient, client = triton
    x = np.array([-1.0, 0.5, 2.0], dtype=np.float32)
    data = httpclient.InferInput("X", [3], "FP32")
    data.set_data_from_numpy(x, binary_data=False)
    result = client("two").infer("two", [data], model_version="1")
    doubled, positive, _ = sessions["two"].run(None, {"X": x})
    np.testing.assert_array_equal(result.as_numpy("doubled"), doubled)
    np.testing.assert_array_equal(result.as_numpy("positive"), positive)
    assert result.as_numpy("pieces") is None


def test_triton_infer_two_inputs(triton, sessions):
    httpclient, client = triton
    a = np.array([[1, 2], [3, 4]], dtype=np.int64)
    b = np.array([[-5, 6], [7, 2 ** 40]], dtype=np.int64)
    inputs = [httpclient.InferInput("A", [2, 2], "INT64"), httpclient.InferInput("B", [2, 2], "INT64")]
    inputs[0].set_data_from_numpy(a, binary_data=True)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    result = client("add").infer("add", inputs, outputs=[httpclient.InferRequestedOutput("S")])
    np.testing.assert_array_equal(result.as_numpy("S"), sessions["add"].run(None, {"A": a, "B": b})[0])


@pytest.mark.parametrize("binary", [False, True])
def test_triton_every_datatype(triton, sessions, binary):
    httpclient, client = triton
    rng = np.random.default_rng(6)
    feeds, inputs = {}, []
    for datatype, (_, dtype) in DTYPES.items():
        if datatype == "BYTES":
            array = np.array([[b"a", "ß".encode()], [b"", b"long" * 50]], dtype=object)
        elif datatype == "BOOL":
            array = rng.random((2, 2)) > 0.5
        elif datatype.startswith("FP"):
            array = rng.standard_normal((2, 2)).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = np.array([[info.min, info.max], [0, 3]], dtype=dtype)
        item = httpclient.InferInput(f"x_{datatype}", [2, 2], datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
        feeds[f"x_{datatype}"] = np.array([[s.decode() for s in row] for row in array], dtype=object) \
            if datatype == "BYTES" else array
    outputs = [httpclient.InferRequestedOutput(f"y_{d}", binary_data=binary) for d in DTYPES]
    result = client("identity").infer("identity", inputs, outputs=outputs)
    expected = dict(zip([o.name for o in sessions["identity"].get_outputs()],
                        sessions["identity"].run(None, feeds)))
    for datatype in DTYPES:
        got = result.as_numpy(f"y_{datatype}")
        want = expected[f"y_{datatype}"]
        if datatype == "BYTES":  # binary BYTES come back as bytes, JSON ones as str
            got = np.array([[s.decode() if isinstance(s, bytes) else s for s in row] for row in got],
                           dtype=object)
        np.testing.assert_array_equal(got, want)


def test_triton_errors(triton):
    httpclient, client = triton
    from tritonclient.utils import InferenceServerException

    data = httpclient.InferInput("X", [2, 2], "FP32")
    data.set_data_from_numpy(np.ones((2, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client("affine").infer("affine", [data])
    assert caught.value.status() == "400" and "[-1, 3]" in caught.value.message()
    data = httpclient.InferInput("X", [1, 3], "FP32")
    data.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client("affine").infer("nope", [data])
    assert caught.value.status() == "404" and "'affine'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client("affine").infer("affine", [data], outputs=[httpclient.InferRequestedOutput("Z")])
    assert caught.value.status() == "400" and "unknown output 'Z'" in caught.value.message()


# -- BF16 ---------------------------------------------------------------------------------------

def build_bfloat16(path):
    """y = x (BF16), as_float = float(x), to_bf16 = bfloat16(f) (f: FP32)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"]),
         helper.make_node("Cast", ["x"], ["as_float"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["f"], ["to_bf16"], to=TensorProto.BFLOAT16)],
        "bfloat16",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, ["n"]),
         helper.make_tensor_value_info("f", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, ["n"]),
         helper.make_tensor_value_info("as_float", TensorProto.FLOAT, ["n"]),
         helper.make_tensor_value_info("to_bf16", TensorProto.BFLOAT16, ["n"])])
    return save(graph, path)


BUILDERS["bf16"] = build_bfloat16


def bf16_floats(bits):
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def nearest_bf16(value):
    """The bits of the bfloat16 nearest ``value`` (ties to even), by exact arithmetic."""
    from fractions import Fraction

    if math.isnan(value):
        return 0xFFC0 if math.copysign(1, value) < 0 else 0x7FC0
    sign = 0x8000 if math.copysign(1, value) < 0 else 0
    if math.isinf(value):
        return sign | 0x7F80

    def magnitude(bits):  # 0x7F80: where rounding up past the largest finite value lands
        return Fraction(2) ** 128 if bits == 0x7F80 else Fraction(float(bf16_floats([bits])[0]))

    target = Fraction(abs(value))
    low, high = 0, 0x7F80  # magnitudes grow with their bits: the last one not above target
    while low < high:
        middle = (low + high + 1) // 2
        if magnitude(middle) <= target:
            low = middle
        else:
            high = middle - 1
    if low == 0x7F80:
        return sign | 0x7F80
    below, above = target - magnitude(low), magnitude(low + 1) - target
    nearest = low if below < above or (below == above and low % 2 == 0) else low + 1
    return sign | nearest


def test_bf16_metadata(models):
    meta = models["bf16"].metadata()
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [("x", "BF16"), ("f", "FP32")]
    assert [(t["name"], t["datatype"]) for t in meta["outputs"]] == \
        [("y", "BF16"), ("as_float", "FP32"), ("to_bf16", "BF16")]


@pytest.mark.parametrize("binary_out", [False, True])
def test_bf16_json_input_is_rounded_to_nearest_even(models, binary_out):
    values = [1.0, -2.5, 0.1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.3e38, 1e-40, -0.0, 65504.0]
    request = {"inputs": [{"name": "x", "shape": [len(values)], "datatype": "BF16", "data": values},
                          {"name": "f", "shape": [len(values)], "datatype": "FP32", "data": values}],
               "parameters": {"binary_data_output": binary_out}}
    header, _ = decode_bf16(infer(models["bf16"], request))
    bits = [nearest_bf16(v) for v in values]
    assert header["y"].tolist() == bits
    np.testing.assert_array_equal(header["as_float"], bf16_floats(bits))


def decode_bf16(answer):
    """An answer of the bf16 model → ({output: uint16 bits or float32 values}, header)."""
    status, ctype, body, extra = answer
    assert status == 200, body
    lines = dict(line.split(": ", 1) for line in extra.decode().split("\r\n") if line)
    length = int(lines.get(v2.HEADER_LENGTH, len(body)))
    header, binary = orjson.loads(body[:length]), body[length:]
    out, offset = {}, 0
    for entry in header["outputs"]:
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if entry["datatype"] == "BF16":
            if size is None:  # JSON: the values, which are exactly float32
                bits = np.array(entry["data"], dtype=np.float32).view(np.uint32) >> 16
                out[entry["name"]] = bits.astype(np.uint16)
            else:
                out[entry["name"]] = np.frombuffer(binary[offset:offset + size], dtype="<u2")
        else:
            raw = entry["data"] if size is None else np.frombuffer(binary[offset:offset + size], "<f4")
            out[entry["name"]] = np.asarray(raw, dtype=np.float32)
        offset += size or 0
    return out, header


@pytest.mark.parametrize("binary_out", [False, True])
def test_bf16_binary_input_round_trips(models, binary_out):
    bits = np.array([0x3F80, 0xC020, 0x0001, 0x8000, 0x7F7F, 0xFF7F, 0x4049], dtype=np.uint16)
    floats = bf16_floats(bits)
    raw, raw_f = bits.astype("<u2").tobytes(), floats.astype("<f4").tobytes()
    request = {"inputs": [{"name": "x", "shape": [7], "datatype": "BF16",
                           "parameters": {"binary_data_size": len(raw)}},
                          {"name": "f", "shape": [7], "datatype": "FP32",
                           "parameters": {"binary_data_size": len(raw_f)}}],
               "outputs": [{"name": n, "parameters": {"binary_data": binary_out}}
                           for n in ("y", "as_float", "to_bf16")]}
    out, header = decode_bf16(infer(models["bf16"], request, raw, raw_f))
    assert out["y"].tolist() == bits.tolist()
    assert out["to_bf16"].tolist() == bits.tolist()  # exact bfloat16 values cast back unchanged
    np.testing.assert_array_equal(out["as_float"], floats)
    assert [e["datatype"] for e in header["outputs"]] == ["BF16", "FP32", "BF16"]


def test_bf16_range_is_checked(models):
    def request(value):
        return {"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [value]},
                           {"name": "f", "shape": [1], "datatype": "FP32", "data": [0.0]}]}

    for value in (1e39, -3.4e38, 3.3962e38):
        message = error_of(infer(models["bf16"], request(value)))
        assert "'x'" in message and "outside BF16" in message
    assert infer(models["bf16"], request(3.3895e38))[0] == 200
    assert "booleans" in error_of(infer(models["bf16"], request(True)))


def test_bf16_simple_infer_answers_numbers(models):
    result = models["bf16"].simple_infer({"inputs": {"x": [1.0, 0.1], "f": [2.0, 0.5]}})["outputs"]
    assert result["y"].dtype == np.float32 and result["y"].tolist() == [1.0, float(bf16_floats([0x3DCD])[0])]
    assert result["to_bf16"].tolist() == [2.0, 0.5]


@settings(max_examples=300, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True)
       | st.floats(min_value=3.38e38, max_value=3.41e38)
       | st.floats(min_value=-1e-38, max_value=1e-38))
def test_property_bf16_rounding_is_nearest_even(value):
    assert int(v2_tensors._bfloat16_bits(np, np.array([value]))[0]) == nearest_bf16(value)


# -- a real lite_serving process: JSON data checked, not coerced; every datatype ------------------

@pytest.fixture(scope="module")
def v2_process(tmp_path_factory):
    """``python -m lite_serving DIR`` serving identity.onnx (every datatype) and bf16.onnx."""
    from support.servers import start, stop

    servers = {}
    for name, build in (("identity", build_identity_all), ("bf16", build_bfloat16)):
        directory = tmp_path_factory.mktemp(f"v2_process_{name}")
        build(directory / f"{name}.onnx")
        servers[name] = start(directory, None)
    yield servers
    for server in servers.values():
        stop(server, signal.SIGTERM)


def over_socket(server, request, *chunks, model="identity"):
    """POST an infer request to a real server; the answer as ``v2.handle`` gives it."""
    from support.http_client import Connection

    header = orjson.dumps(request) if isinstance(request, dict) else request
    headers = {"Host": "t", "Content-Type": "application/json"}
    if chunks:
        headers[v2.HEADER_LENGTH] = str(len(header))
    with Connection("127.0.0.1", server.port, timeout=30) as conn:
        conn.request("POST", f"/v2/models/{model}/infer", headers, header + b"".join(chunks))
        resp = conn.read_response()
    length = resp.header(v2.HEADER_LENGTH)
    extra = b"" if length is None else f"{v2.HEADER_LENGTH}: {length}\r\n".encode()
    return resp.status, resp.media_type().encode(), resp.body, extra


def identity_request(datatype, data, shape=None):
    """Every input of the identity model: ``data`` for ``datatype``, zeros for the others."""
    entries = []
    for d, (_, dtype) in DTYPES.items():
        if d == datatype:
            entries.append({"name": f"x_{d}", "shape": shape or [1, 2], "datatype": d, "data": data})
        else:
            value = [["a", "b"]] if d == "BYTES" else np.zeros((1, 2), dtype=dtype).tolist()
            entries.append({"name": f"x_{d}", "shape": [1, 2], "datatype": d, "data": value})
    return {"inputs": entries}


@pytest.mark.parametrize("datatype, data, words", [
    ("INT64", [1, True], "INT64 data must be integers, not booleans"),
    ("INT32", [0, False], "INT32 data must be integers, not booleans"),
    ("FP32", [0.5, True], "FP32 data must be numbers, not booleans"),
    ("FP64", [False, 1.5], "FP64 data must be numbers, not booleans"),
    ("FP16", [True, 1], "FP16 data must be numbers, not booleans"),
    ("BOOL", [1, 0], "BOOL data must be true/false, not integers"),
    ("BOOL", [True, None], "BOOL data must be true/false, not nulls"),
    ("UINT8", [1, 2.0], "UINT8 data must be integers, not floating-point numbers"),
    ("BYTES", ["a", 1], "BYTES data must be strings, not integers"),
    ("FP32", [1e39, 0], "the value 1e+39 in data lies outside FP32"),
    ("FP32", [0, -3.5e38], "the value -3.5e+38 in data lies outside FP32"),
    ("FP16", [65520, 0], "the value 65520.0 in data lies outside FP16 [-65504.0, 65504.0]"),
    ("UINT8", [1, 256], "the value 256 in data lies outside UINT8 [0, 255]"),
    ("INT8", [-129, 0], "the value -129 in data lies outside INT8 [-128, 127]"),
    ("UINT64", [-1, 0], "the value -1 in data lies outside UINT64"),
])
def test_json_data_is_checked_not_coerced(v2_process, datatype, data, words):
    message = error_of(over_socket(v2_process["identity"], identity_request(datatype, data)))
    assert message.startswith(f"input 'x_{datatype}': "), message
    assert words in message


def test_numbers_past_64_bits_are_400(v2_process):
    """orjson reads an integer past 64 bits as a float; one past float64 leaves it to Python's json."""
    body = json.dumps(identity_request("UINT64", [2 ** 64, 0])).encode()
    message = error_of(over_socket(v2_process["identity"], body))
    assert message == "input 'x_UINT64': UINT64 data must be integers, not floating-point numbers"
    body = json.dumps(identity_request("FP64", [10 ** 400, 0])).encode()
    message = error_of(over_socket(v2_process["identity"], body))
    assert message.startswith("input 'x_FP64': an integer in data lies outside FP64 [")


def test_json_data_at_the_limits_is_accepted(v2_process):
    cases = {"FP16": [65504.0, 65519.0], "FP32": [3.4028234663852886e38, -1e-45],
             "UINT64": [2 ** 64 - 1, 0], "INT64": [-2 ** 63, 2 ** 63 - 1], "BOOL": [True, False],
             "FP64": [1.7976931348623157e308, 5e-324]}
    for datatype, data in cases.items():
        request = identity_request(datatype, data)
        request["parameters"] = {"binary_data_output": True}
        body = json.dumps(request).encode()
        _, out = decode(over_socket(v2_process["identity"], body))
        expected = np.array(data, dtype=DTYPES[datatype][1]).reshape(1, 2)
        np.testing.assert_array_equal(out[f"y_{datatype}"], expected)
    # FP16 65519 is nearer 65504 than infinity: rounded, not refused
    assert np.array([65519.0], np.float16)[0] == 65504


def test_nan_and_infinity_tokens_stay_accepted(v2_process):
    body = json.dumps(identity_request("FP32", [math.nan, -math.inf])).encode()
    header, _ = decode(over_socket(v2_process["identity"], body))
    assert next(o for o in header["outputs"] if o["name"] == "y_FP32")["data"] == [None, None]


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_every_datatype_over_a_socket(v2_process, binary_in, binary_out):
    """FP16, BYTES (empty, non-ASCII, long), every integer at its limits: in and out, JSON and binary."""
    feeds, entries, chunks = every_datatype(11, [["", "héllo"], ["z" * 1000, "\u2603"], ["a", "b"]],
                                            1000, binary_in)
    request = {"inputs": entries, "parameters": {"binary_data_output": binary_out}}
    header, out = decode(over_socket(v2_process["identity"], request, *(chunks if binary_in else ())))
    for datatype in DTYPES:
        np.testing.assert_array_equal(out[f"y_{datatype}"], feeds[f"x_{datatype}"])


def test_bf16_over_a_socket(v2_process):
    bits = np.array([0x3F80, 0xC020, 0x4049], dtype=np.uint16)
    raw = bits.astype("<u2").tobytes()
    request = {"inputs": [{"name": "x", "shape": [3], "datatype": "BF16",
                           "parameters": {"binary_data_size": len(raw)}},
                          {"name": "f", "shape": [3], "datatype": "FP32", "data": [0.1, 1e39, 2.0]}]}
    message = error_of(over_socket(v2_process["bf16"], request, raw, model="bf16"))
    assert message.startswith("input 'f': the value 1e+39 in data lies outside FP32")
    request["inputs"][1]["data"] = [0.1, 1.0, 2.0]
    out, _ = decode_bf16(over_socket(v2_process["bf16"], request, raw, model="bf16"))
    assert out["y"].tolist() == bits.tolist()
    np.testing.assert_array_equal(out["as_float"], bf16_floats(bits))


def test_triton_bf16(triton):
    """tritonclient sends and reads BF16 as ml_dtypes.bfloat16, in binary."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    httpclient, client = triton
    x = np.array([1.0, -2.5, 0.1, 3e38], dtype=ml_dtypes.bfloat16)
    f = np.array([0.5, 2.0, -1.0, 7.0], dtype=np.float32)
    inputs = [httpclient.InferInput("x", [4], "BF16"), httpclient.InferInput("f", [4], "FP32")]
    inputs[0].set_data_from_numpy(x, binary_data=True)
    inputs[1].set_data_from_numpy(f, binary_data=False)
    outputs = [httpclient.InferRequestedOutput("y", binary_data=True),
               httpclient.InferRequestedOutput("as_float", binary_data=False),
               httpclient.InferRequestedOutput("to_bf16", binary_data=True)]
    result = client("bf16").infer("bf16", inputs, outputs=outputs)
    assert result.as_numpy("y").view(np.uint16).tolist() == x.view(np.uint16).tolist()
    np.testing.assert_array_equal(result.as_numpy("as_float"), x.astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("to_bf16").astype(np.float32), f)
