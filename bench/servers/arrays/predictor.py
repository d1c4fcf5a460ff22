"""numpy arrays in (bench/arrays.py): the mean of the array sent, as lists or as an array ext value."""

import numpy as np
import openbayes_serving as serv


class Predictor:
    def predict(self, json):
        return {"mean": float(np.asarray(json["x"], dtype=np.float32).mean())}


if __name__ == "__main__":
    serv.run(Predictor)
