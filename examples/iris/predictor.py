"""Iris flower classifier: POST {"features": [[5.1, 3.5, 1.4, 0.2], ...]} (cm: sepal, petal)."""

import numpy as np
import openbayes_serving as serv
from openbayes_serving.common import ServingError


class Predictor:
    def __init__(self, onnx):
        self.session = onnx
        with open("classes.txt") as f:
            self.classes = f.read().split()

    def predict(self, json):
        try:
            features = np.asarray(json["features"], dtype=np.float32).reshape(-1, 4)
        except (KeyError, TypeError, ValueError):
            raise ServingError('send {"features": [[sepal length, sepal width, petal length, '
                               'petal width], ...]} in centimetres') from None
        labels, probabilities = self.session.run(None, {"features": features})
        return {
            "classes": [self.classes[i] for i in labels],
            "probabilities": probabilities,
        }


if __name__ == "__main__":
    serv.run(Predictor)
