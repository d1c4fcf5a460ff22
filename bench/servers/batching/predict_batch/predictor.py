"""Batching benchmark, one model call per batch of requests: lite_serving's ``predict_batch``.

``json`` is the list of the batch's decoded bodies, in arrival order; the answer is one
result per request, in the same order.
"""

import os
import sys

import lite_serving as serv

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from onnx_rows import RowModel  # noqa: E402


class Predictor:
    def __init__(self):
        self.model = RowModel()

    def predict_batch(self, json):
        return self.model.predict_batch(json)


if __name__ == "__main__":
    serv.run(Predictor)
