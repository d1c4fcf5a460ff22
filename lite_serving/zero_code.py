"""Serving a directory that holds only an ``.onnx`` model: no predictor.py needed.

``POST /`` takes ``{"inputs": {name: nested list}}`` (JSON or MessagePack) and
answers ``{"outputs": {name: nested list}}``; the Open Inference Protocol
routes under ``/v2`` serve the same model.
"""

import os


class OnnxModelPredictor:
    """The predictor lite_serving builds for a bare ONNX model."""

    def __init__(self, onnx):
        from .v2 import V2Model
        self.model = V2Model(onnx, "model")  # the name matters only on /v2, served by the app

    def predict(self, json):
        return self.model.simple_infer(json)


def has_only_model(directory):
    """True when ``directory`` has an ``.onnx`` file and no predictor.py."""
    if os.path.isfile(os.path.join(directory, "predictor.py")):
        return False
    return any(name.endswith(".onnx") for name in os.listdir(directory))
