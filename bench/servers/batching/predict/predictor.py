"""Batching benchmark, one model call per request: served by lite_serving (``predict``) and the reference."""

import os
import sys

import openbayes_serving as serv

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from onnx_rows import RowModel  # noqa: E402


class Predictor:
    def __init__(self):
        self.model = RowModel()

    def predict(self, json):
        return self.model.predict(json)


if __name__ == "__main__":
    serv.run(Predictor)
