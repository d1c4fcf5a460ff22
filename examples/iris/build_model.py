"""Train the example model and export it to ONNX: ``python examples/iris/build_model.py``.

A logistic-regression classifier of the iris flowers (the data set ships with
scikit-learn), written to ``model.onnx`` beside this file with skl2onnx.
Needs: pip install scikit-learn skl2onnx
"""

import os

import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    iris = load_iris()
    x = iris.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, iris.target, test_size=0.3, random_state=0)
    model = LogisticRegression(max_iter=500).fit(x_train, y_train)
    print(f"test accuracy: {model.score(x_test, y_test):.3f}")
    onx = to_onnx(model, x_train[:1], target_opset=17,
                  options={id(model): {"zipmap": False}})
    onx.graph.input[0].name = "features"
    for node in onx.graph.node:
        node.input[:] = ["features" if name == "X" else name for name in node.input]
    path = os.path.join(HERE, "model.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    with open(os.path.join(HERE, "classes.txt"), "w") as f:
        f.write("\n".join(iris.target_names) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
