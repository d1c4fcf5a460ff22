"""Answer benchmark: a 1M-element float32 array (4 MB), returned as it is, inside a dict."""

import numpy as np
import openbayes_serving as serv


class Predictor:
    def __init__(self):
        self.array = np.random.default_rng(0).random(1_000_000, dtype=np.float32)

    def predict(self, json):
        return {"outputs": self.array}


if __name__ == "__main__":
    serv.run(Predictor)
