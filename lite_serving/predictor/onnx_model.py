"""The ``onnx`` argument of ``__init__``: find the model file and open an InferenceSession."""

import os

from lite_serving.errors import StartupError
from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")


def find_model(model_path):
    """The ``.onnx`` file ``model_path`` names, or the only one in that directory."""
    if os.path.isfile(model_path):
        return model_path
    if not os.path.isdir(model_path):
        raise StartupError(f"--model-path {model_path!r} is neither a file nor a directory")
    found = sorted(fn for fn in os.listdir(model_path) if fn.endswith(".onnx"))
    if not found:
        raise StartupError(f"no .onnx model in {os.path.abspath(model_path)!r}; put one there "
                           "or name it with --model-path")
    if len(found) > 1:
        raise StartupError(f"several .onnx models in {os.path.abspath(model_path)!r} "
                           f"({', '.join(found)}); choose one with --model-path")
    return os.path.join(model_path, found[0])


def _providers(ort):
    available = ort.get_available_providers()
    preferred = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    return preferred + ["CPUExecutionProvider"]


def load_session(model_path, intra_op_threads=0, inter_op_threads=0):
    """An ``onnxruntime.InferenceSession`` on the best available execution provider."""
    path = find_model(model_path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise StartupError("__init__ asks for `onnx` but onnxruntime is not installed; "
                           "install it with: pip install 'lite-serving[onnx]'") from None
    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=_providers(ort))
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise StartupError(f"onnxruntime cannot load {path!r}: {exc}") from None
    log.info("onnx model: %s (onnxruntime %s, providers %s)", path, ort.__version__,
             ", ".join(session.get_providers()))
    return session
