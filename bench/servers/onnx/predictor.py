"""ONNX benchmark: run the tiny model built by bench/tools/make_onnx_model.py on json["inputs"]."""

import numpy as np
import openbayes_serving as serv


class Predictor:
    def __init__(self, onnx):
        self.session = onnx
        self.input_name = onnx.get_inputs()[0].name

    def predict(self, json):
        x = np.asarray(json["inputs"], dtype=np.float32).reshape(-1, 4)
        (y,) = self.session.run(None, {self.input_name: x})
        return {"outputs": y.tolist()}


if __name__ == "__main__":
    serv.run(Predictor)
