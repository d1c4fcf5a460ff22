"""ONNX end to end on a real lite_serving process: zero-code serving, v2 with tritonclient, `onnx`."""

import json
import os
import shutil
import signal
import urllib.request

import pytest

np = pytest.importorskip("numpy")
ort = pytest.importorskip("onnxruntime")

from support.iris import IRIS, SAMPLES, check_with_tritonclient, expected  # noqa: E402
from support.servers import launch, start  # noqa: E402


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bare")
    shutil.copy(os.path.join(IRIS, "model.onnx"), directory / "iris.onnx")
    server = start(directory, None)
    yield server
    server.stop(signal.SIGTERM)


def post_json(server, path, obj):
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=json.dumps(obj).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_bare_model_directory_answers_simple_post(bare_model):
    labels, probabilities = expected()
    status, body = post_json(bare_model, "/", {"inputs": {"features": SAMPLES.tolist()}})
    assert status == 200
    assert body["outputs"]["label"] == labels.tolist()
    np.testing.assert_allclose(body["outputs"]["probabilities"], probabilities, rtol=1e-6)


def test_bare_model_log_names_the_v2_model(bare_model):
    assert "/v2/models/iris" in bare_model.log


def test_v2_json_infer_matches_onnxruntime(bare_model):
    labels, probabilities = expected()
    status, body = post_json(bare_model, "/v2/models/iris/infer", {
        "id": "req-7",
        "inputs": [{"name": "features", "shape": [3, 4], "datatype": "FP32",
                    "data": SAMPLES.ravel().tolist()}]})
    assert status == 200
    assert body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["data"] == labels.tolist()
    assert outputs["probabilities"]["shape"] == [3, 3]
    np.testing.assert_allclose(outputs["probabilities"]["data"], probabilities.ravel(), rtol=1e-6)


@pytest.mark.parametrize("bad, fragment", [
    ({"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}, "nope"),
    ({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "shape"),
    ({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]},
     "FP32"),
    ({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]},
     "features"),
    ({"inputs": []}, "features"),
])
def test_v2_bad_inputs_answer_400_naming_the_input(bare_model, bad, fragment):
    status, body = post_json(bare_model, "/v2/models/iris/infer", bad)
    assert status == 400
    assert fragment in body["error"]


def test_v2_unknown_model_is_404(bare_model):
    status, body = post_json(bare_model, "/v2/models/other/infer", {"inputs": []})
    assert status == 404
    assert "iris" in body["error"]


def test_tritonclient_json_and_binary_against_lite_serving(bare_model):
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(f"127.0.0.1:{bare_model.port}")
    check_with_tritonclient(client, httpclient)


def test_predictor_asking_for_onnx_also_serves_v2(tmp_path):
    directory = tmp_path / "iris"
    shutil.copytree(IRIS, directory)
    server = start(directory, None, "--model-name", "flowers")
    try:
        status, body = post_json(server, "/", {"features": SAMPLES.tolist()})
        assert status == 200 and body["classes"][0] == "setosa"
        status, body = post_json(server, "/v2/models/flowers/infer", {
            "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
                        "data": SAMPLES[0].tolist()}]})
        assert status == 200
        assert {o["name"] for o in body["outputs"]} == {"label", "probabilities"}
    finally:
        server.stop()


def test_directory_with_two_models_and_no_predictor_lists_them(tmp_path):
    for name in ("a.onnx", "b.onnx"):
        shutil.copy(os.path.join(IRIS, "model.onnx"), tmp_path / name)
    server = launch(tmp_path, "--host", "127.0.0.1", "--port", "0")
    code = server.proc.wait(30)
    server.stop()
    assert code != 0
    assert "a.onnx, b.onnx" in server.log and "--model-path" in server.log
    assert "Traceback" not in server.log
