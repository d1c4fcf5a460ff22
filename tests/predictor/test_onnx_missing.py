"""`onnx` asked for where onnxruntime cannot be imported: one clear line, no traceback."""

import os
import shutil

from support.servers import launch

IRIS_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "examples", "iris", "model.onnx")

PREDICTOR = """
class Predictor:
    def __init__(self, onnx):
        self.session = onnx

    def predict(self, json):
        return {}
"""


def test_missing_onnxruntime_names_the_extra_to_install(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # An onnxruntime that cannot be imported, whatever is installed.
    (blocker / "onnxruntime.py").write_text("raise ImportError('onnxruntime is blocked for this test')\n")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(IRIS_MODEL, model_dir / "model.onnx")
    (model_dir / "predictor.py").write_text(PREDICTOR)
    server = launch(model_dir, "--host", "127.0.0.1", "--port", "0", pythonpath_first=str(blocker))
    code = server.proc.wait(30)
    server.stop()
    assert code != 0
    assert "onnxruntime is not installed" in server.log
    assert "pip install 'lite-serving[onnx]'" in server.log
    assert "Traceback" not in server.log
