"""Answer benchmark, the reference's way: it cannot encode numpy, so the array goes through tolist()."""

import numpy as np
import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.array = np.random.default_rng(0).random(1_000_000, dtype=np.float32)

    def predict(self, json):
        return {"outputs": self.array.tolist()}


if __name__ == "__main__":
    serv.run(Predictor)
