"""Build the tiny ONNX model served in the ONNX scenario (run with the tools venv).

y = softmax(relu(x @ W1 + b1) @ W2 + b2) with x: float32[N, 4], W1: [4, 16], W2: [16, 3].
Weights are fixed pseudo-random numbers so every run serves the same model.

Usage: python make_onnx_model.py OUTPUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8  # old enough for any recent onnxruntime
OPSET = 13


def initializer(name, shape, rng):
    """A float32 weight tensor filled from ``rng``."""
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def build_model():
    """The two-layer perceptron as an ``onnx.ModelProto``."""
    rng = np.random.default_rng(0)
    weights = [
        initializer("W1", (4, 16), rng),
        initializer("b1", (16,), rng),
        initializer("W2", (16, 3), rng),
        initializer("b2", (3,), rng),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["h4"]),
        helper.make_node("Softmax", ["h4"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    onnx.save(build_model(), sys.argv[1])
