"""The work every server of the batching benchmark does per request, in one place.

A request body is ``{"inputs": {input name: [row, ...]}}`` (the body lite_serving's
zero-code ONNX serving takes); its answer is ``{"outputs": {output name: [row, ...]}}``.
Every server (lite with ``predict`` and with ``predict_batch``, the reference, LitServe)
and the model-only measurement open the model through :func:`open_session`, so they
run the same file with the same session options and thread counts.

The model file and the thread count come from the environment, set by the harness:
``BENCH_MODEL`` (path of the ``.onnx`` file) and ``BENCH_THREADS`` (intra-op threads).
"""

import os

import numpy as np
import onnxruntime as ort

_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32}


def open_session(path=None, threads=None):
    """An InferenceSession on the CPU with ``threads`` intra-op threads and one inter-op thread."""
    path = path or os.environ["BENCH_MODEL"]
    threads = int(threads or os.environ.get("BENCH_THREADS", "1"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class RowModel:
    """Runs an ONNX model on the rows of one request or of a batch of requests."""

    def __init__(self, session=None):
        self.session = session or open_session()
        self.inputs = [(i.name, _DTYPES[i.type]) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def feeds(self, body):
        """``{input name: array}`` of one request body; ValueError naming what is missing."""
        given = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(given, dict):
            raise ValueError('the body must be {"inputs": {name: rows}}')
        missing = [name for name, _ in self.inputs if name not in given]
        if missing:
            raise ValueError(f"missing model inputs {', '.join(missing)}")
        return {name: np.asarray(given[name], dtype=dtype) for name, dtype in self.inputs}

    def run(self, feeds):
        """The model's output arrays for ``feeds``."""
        return self.session.run(self.outputs, feeds)

    def answer(self, outputs, start=0, stop=None):
        """The answer body for rows ``start:stop`` of ``outputs``."""
        return {"outputs": {name: out[start:stop].tolist() for name, out in zip(self.outputs, outputs)}}

    def predict(self, body):
        """The answer to one request."""
        return self.answer(self.run(self.feeds(body)))

    def concatenate(self, feeds_list):
        """One feed of all requests' rows along axis 0, and each request's row count."""
        counts = [len(feeds[self.inputs[0][0]]) for feeds in feeds_list]
        joined = {name: np.concatenate([feeds[name] for feeds in feeds_list]) for name, _ in self.inputs}
        return joined, counts

    def split(self, outputs, counts):
        """The answers of each request of a batch, given the batch's outputs and row counts."""
        answers, start = [], 0
        for count in counts:
            answers.append(self.answer(outputs, start, start + count))
            start += count
        return answers

    def predict_batch(self, bodies):
        """The answers to several requests, from one model call on all their rows."""
        joined, counts = self.concatenate([self.feeds(body) for body in bodies])
        return self.split(self.run(joined), counts)
