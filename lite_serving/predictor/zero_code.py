"""Serving a directory that holds only an ``.onnx`` model: no predictor.py needed.

``POST /`` takes ``{"inputs": {name: nested list}}`` (JSON or MessagePack) and
answers ``{"outputs": {name: nested list}}``; the Open Inference Protocol
routes under ``/v2`` serve the same model.
"""

import os

from lite_serving.errors import ServingError


class OnnxModelPredictor:
    """The predictor lite_serving builds for a bare ONNX model.

    Requests are batched when the model's first dimension is dynamic: bodies
    whose inputs agree on every other dimension run in one call, and each
    answer gets its own rows.
    """

    def __init__(self, onnx):
        from lite_serving.v2.model import V2Model
        self.model = V2Model(onnx, "model")  # the name matters only on /v2, served by the app
        if not self.model.batchable:
            self.predict_batch = None  # a fixed first dimension: every request runs alone

    def predict(self, json):
        return self.model.simple_infer(json)

    def predict_batch(self, json):
        model = self.model
        results = [None] * len(json)
        jobs, kept = [], []
        for index, body in enumerate(json):
            try:
                jobs.append(model.prepare_simple(body))
                kept.append(index)
            except ServingError as exc:
                results[index] = exc
        for index, job, outputs in zip(kept, jobs, model.run_batch(jobs)):
            results[index] = outputs if isinstance(outputs, ServingError) else \
                model.respond_simple(job, outputs)
        return results


def has_only_model(directory):
    """True when ``directory`` has an ``.onnx`` file and no predictor.py."""
    if os.path.isfile(os.path.join(directory, "predictor.py")):
        return False
    return any(name.endswith(".onnx") for name in os.listdir(directory))
