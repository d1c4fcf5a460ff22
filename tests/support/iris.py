"""The iris example model for the tests that serve it: samples, onnxruntime's own answers, and
a check of a server through tritonclient (import after skipping when numpy or onnxruntime are
missing)."""

import os
import shutil

import numpy as np
import onnxruntime as ort

IRIS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples",
                    "iris")
SAMPLES = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


def expected():
    session = ort.InferenceSession(os.path.join(IRIS, "model.onnx"))
    labels, probabilities = session.run(None, {"features": SAMPLES})
    return labels, probabilities


def check_with_tritonclient(client, httpclient, model="iris"):
    """Health, metadata and inference (JSON and binary tensors) of ``model`` through ``client``."""
    labels, probabilities = expected()
    assert client.is_server_live()
    assert client.is_model_ready(model)
    meta = client.get_model_metadata(model)
    assert meta["inputs"][0]["name"] == "features"
    for binary in (False, True):
        inp = httpclient.InferInput("features", list(SAMPLES.shape), "FP32")
        inp.set_data_from_numpy(SAMPLES, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("label", binary_data=binary),
                   httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
        result = client.infer(model, [inp], outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("label"), labels)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)


def serve_bare_model(directory):
    """Serve the iris model as ``DIR/iris.onnx`` with no predictor.py (zero-code); the server once
    it is ready."""
    from support.servers import start
    directory.mkdir()
    shutil.copy(os.path.join(IRIS, "model.onnx"), directory / "iris.onnx")
    server = start(directory)
    return server
