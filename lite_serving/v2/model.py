"""The v2 model: an ONNX session's tensors and metadata, inference requests checked and run.

``V2Model(session, name, version="1")`` reads an ``onnxruntime.InferenceSession``'s
inputs and outputs once; several threads may use it at once.
``infer(request, binary)`` takes a decoded inference request (and the bytes
after its JSON header) and returns the response object and its binary output
chunks; ``prepare`` + ``respond`` are the same in two steps, around a run that
:meth:`V2Model.run_batch` may share with other requests. ``simple_infer`` serves
``POST /`` (``{"inputs": {name: nested list}}`` → ``{"outputs": {name: array}}``).
Bad requests raise ``ServingError`` 400, onnxruntime failures 500.
"""

import json as _stdlib_json
import math
import sys

from lite_serving.errors import ServingError
from lite_serving.v2.tensors import (
    DATATYPES,
    ONNX_TO_V2,
    _array_from_binary,
    _array_from_json,
    _bfloat16_from_ortvalue,
    _bfloat16_values,
    _contiguous,
    _datatype_of,
    _output_array,
    _to_binary,
    _to_json_data,
    encode_json,
)

PLATFORM = "onnxruntime_onnx"
_BFLOAT16 = 16  # ONNX TensorProto.BFLOAT16


class _Tensor:
    """One model input or output: name, v2 datatype, shape (-1 for dynamic dims)."""

    __slots__ = ("name", "datatype", "shape", "onnx_type", "numpy_type")

    def __init__(self, node):
        self.name = node.name
        self.onnx_type = node.type
        self.datatype = ONNX_TO_V2.get(node.type)
        self.numpy_type = DATATYPES[self.datatype][0] if self.datatype else None
        shape = node.shape if isinstance(node.shape, (list, tuple)) else []
        self.shape = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]

    def describe(self):
        # a type the protocol has no name for shows its ONNX name, e.g. seq(map(int64,tensor(float)))
        return {"name": self.name, "datatype": self.datatype or self.onnx_type, "shape": list(self.shape)}

    def summary(self):
        return f"{self.name} ({self.datatype or self.onnx_type} {self.shape})"


class V2Model:
    """An ONNX session served under ``name``/``version`` by the v2 protocol."""

    def __init__(self, session, name, version="1"):
        self.session = session
        self.name = str(name)
        self.version = str(version)
        self.inputs = [_Tensor(node) for node in session.get_inputs()]
        self.outputs = [_Tensor(node) for node in session.get_outputs()]
        self._inputs = {t.name: t for t in self.inputs}
        self._outputs = {t.name: t for t in self.outputs}
        self._bfloat16 = any(t.datatype == "BF16" for t in self.inputs + self.outputs)
        self._metadata = {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [t.describe() for t in self.inputs],
            "outputs": [t.describe() for t in self.outputs],
        }
        self.metadata_json = encode_json(self._metadata)

    def metadata(self):
        return _stdlib_json.loads(self.metadata_json)  # a fresh copy the caller may change

    # -- inference ---------------------------------------------------------------------------

    def infer(self, request, binary=None):
        """A decoded v2 request (and its binary part) → (response object, binary output chunks)."""
        job = self.prepare(request, binary)
        return self.respond(job, self._run(job.names, job.feeds))

    def prepare(self, request, binary=None):
        """A decoded v2 request, checked and converted: an :class:`InferJob` ready to run."""
        if not isinstance(request, dict):
            raise ServingError("the inference request must be a JSON object with \"inputs\"")
        entries = request.get("inputs")
        if entries is None:
            raise ServingError("the inference request has no \"inputs\"")
        if not isinstance(entries, list):
            raise ServingError("\"inputs\" must be a list of {name, shape, datatype, data} objects")
        parameters = _parameters(request, "the request")
        for key in ("shared_memory_region", "classification"):
            if key in parameters:
                raise ServingError(f"the request parameter {key!r} is not supported by this server")
        chunk = memoryview(binary if binary is not None else b"")
        if chunk.format != "B" or chunk.ndim != 1:
            chunk = chunk.cast("B")
        feeds = {}
        offset = 0
        for index, entry in enumerate(entries):
            array, offset = self._decode_input(entry, index, feeds, chunk, offset)
            feeds[entry["name"]] = array
        if offset != len(chunk):
            raise ServingError(f"the binary part of the body holds {len(chunk)} bytes but the inputs "
                               f"declare {offset} in binary_data_size")
        missing = [t.summary() for t in self.inputs if t.name not in feeds]
        if missing:
            raise ServingError(f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")

        wanted = self._requested_outputs(request.get("outputs"), parameters.get("binary_data_output"))
        return InferJob(feeds, wanted, request)

    def respond(self, job, results):
        """The model's ``results`` for ``job`` → (response object, binary output chunks)."""
        request = job.request
        outputs = []
        parts = []
        for (name, as_binary), value in zip(job.wanted, results):
            array = _output_array(name, value)
            datatype = "BF16" if self._outputs[name].datatype == "BF16" else _datatype_of(array, name)
            entry = {"name": name, "datatype": datatype, "shape": list(array.shape)}
            if as_binary:
                part = _to_binary(array, datatype)
                entry["parameters"] = {"binary_data_size": len(part)}
                parts.append(part)
            else:
                entry["data"] = _to_json_data(array, datatype)
            outputs.append(entry)
        response = {"model_name": self.name, "model_version": self.version}
        if "id" in request:
            response["id"] = request["id"]
        response["outputs"] = outputs
        return response, parts

    def simple_infer(self, obj):
        """``{"inputs": {name: nested list}}`` → ``{"outputs": {name: numpy array}}`` (every output)."""
        job = self.prepare_simple(obj)
        return self.respond_simple(job, self._run(job.names, job.feeds))

    def prepare_simple(self, obj):
        """A ``POST /`` body, checked and converted: an :class:`InferJob` for every output."""
        usage = 'POST / takes {"inputs": {"<input name>": <nested list>, ...}}'
        if not isinstance(obj, dict) or not isinstance(obj.get("inputs"), dict):
            raise ServingError(f"{usage}; the model's inputs are: {self._input_list()}")
        feeds = {}
        for name, value in obj["inputs"].items():
            spec = self._inputs.get(name)
            if spec is None:
                raise ServingError(f"unknown input {name!r}; the model's inputs are: {self._input_list()}")
            _check_supported(spec, "input")
            array = _array_from_json(value, spec.datatype, spec.numpy_type, name)
            _check_shape(spec, list(array.shape), name)
            feeds[name] = array
        missing = [t.summary() for t in self.inputs if t.name not in feeds]
        if missing:
            raise ServingError(f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
        return InferJob(feeds, [(t.name, False) for t in self.outputs], None)

    def respond_simple(self, job, results):
        """``{"outputs": {name: value}}``: sequences and maps too (the JSON encoder takes them)."""
        results = list(results)
        for index, spec in enumerate(self.outputs):
            if spec.datatype == "BF16":
                results[index] = _bfloat16_values(results[index])
        return {"outputs": dict(zip(job.names, results))}

    # -- batches -----------------------------------------------------------------------------

    @property
    def batchable(self):
        """True when every input's first dimension is dynamic (and no tensor is BF16): requests
        may then be run together, their rows concatenated along axis 0."""
        return (bool(self.inputs) and not self._bfloat16
                and all(t.shape and t.shape[0] == -1 for t in self.inputs)
                and all(t.datatype is not None for t in self.outputs))

    def run_batch(self, jobs):
        """Run ``jobs`` with as few model calls as their shapes allow; their results, in order.

        Jobs whose inputs agree on every dimension but the first, on datatypes
        and on the outputs asked for are concatenated along axis 0 and run
        once; each gets its own rows of every output. A job's entry is its
        list of output arrays, or the ServingError its run raised.
        """
        import numpy as np
        out = [None] * len(jobs)
        groups = {}
        for index, job in enumerate(jobs):
            key = job.batch_key()
            groups.setdefault(key, []).append(index)
        for key, members in groups.items():
            if key is None or len(members) == 1:
                for index in members:
                    out[index] = self._run_one(jobs[index])
                continue
            group = [jobs[i] for i in members]
            names = group[0].names
            feeds = {name: np.concatenate([job.feeds[name] for job in group], axis=0)
                     for name in group[0].feeds}
            total = sum(job.rows for job in group)
            try:
                results = self._run(names, feeds)
            except ServingError as exc:
                for index in members:
                    out[index] = exc
                continue
            if not all(isinstance(r, np.ndarray) and r.ndim and r.shape[0] == total for r in results):
                # outputs not laid out by rows (the model mixes requests): run each on its own
                for index in members:
                    out[index] = self._run_one(jobs[index])
                continue
            start = 0
            for index, job in zip(members, group):
                stop = start + job.rows
                out[index] = [r[start:stop] for r in results]
                start = stop
        return out

    def _run_one(self, job):
        try:
            return self._run(job.names, job.feeds)
        except ServingError as exc:
            return exc

    # -- helpers -----------------------------------------------------------------------------

    def _input_list(self):
        return ", ".join(t.summary() for t in self.inputs) or "none"

    def _decode_input(self, entry, index, feeds, chunk, offset):
        if not isinstance(entry, dict):
            raise ServingError(f"inputs[{index}] must be an object with name, shape, datatype and data")
        name = entry.get("name")
        if not isinstance(name, str):
            raise ServingError(f"inputs[{index}] has no \"name\" string")
        spec = self._inputs.get(name)
        if spec is None:
            raise ServingError(f"unknown input {name!r}; the model's inputs are: {self._input_list()}")
        if name in feeds:
            raise ServingError(f"input {name!r} is given more than once")
        _check_supported(spec, "input")
        datatype = entry.get("datatype")
        if datatype != spec.datatype:
            if not isinstance(datatype, str):
                raise ServingError(f"input {name!r} has no \"datatype\"; the model expects {spec.datatype}")
            raise ServingError(f"input {name!r} has datatype {datatype}; the model expects {spec.datatype}")
        shape = entry.get("shape")
        if (not isinstance(shape, list)
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise ServingError(f"input {name!r} needs \"shape\": a list of non-negative integers "
                               f"(the model expects {spec.shape}, -1 meaning any size)")
        _check_shape(spec, shape, name)
        parameters = _parameters(entry, f"input {name!r}")
        if "shared_memory_region" in parameters:
            raise ServingError(f"input {name!r}: shared memory is not supported by this server")
        size = parameters.get("binary_data_size")
        count = math.prod(shape)
        if size is None:
            if "data" not in entry:
                raise ServingError(f"input {name!r} has neither \"data\" nor a binary_data_size parameter")
            array = _array_from_json(entry["data"], spec.datatype, spec.numpy_type, name)
            if array.size != count:
                raise ServingError(f"input {name!r} has {array.size} elements in \"data\"; "
                                   f"shape {shape} needs {count}")
            return array.reshape(shape), offset
        if "data" in entry:
            raise ServingError(f"input {name!r} has both \"data\" and binary_data_size; give one")
        if type(size) is not int or size < 0:
            raise ServingError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if offset + size > len(chunk):
            raise ServingError(f"input {name!r} declares binary_data_size {size} but the binary part of "
                               f"the body has only {len(chunk) - offset} bytes left for it "
                               f"({len(chunk)} in all)")
        data = chunk[offset:offset + size]
        return _array_from_binary(data, spec.datatype, spec.numpy_type, shape, count, name), offset + size

    def _requested_outputs(self, requested, binary_default):
        """[(output name, as binary)] in answer order."""
        if binary_default is not None and type(binary_default) is not bool:
            raise ServingError("the request parameter binary_data_output must be true or false")
        binary_default = bool(binary_default)
        if requested is None or requested == []:
            # every output the protocol can carry (sequences and maps cannot be asked for)
            return [(t.name, binary_default) for t in self.outputs if t.datatype is not None]
        if not isinstance(requested, list):
            raise ServingError("\"outputs\" must be a list of {name, parameters} objects")
        wanted = []
        seen = set()
        for index, entry in enumerate(requested):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise ServingError(f"outputs[{index}] must be an object with a \"name\" string")
            name = entry["name"]
            spec = self._outputs.get(name)
            if spec is None:
                known = ", ".join(t.summary() for t in self.outputs)
                raise ServingError(f"unknown output {name!r}; the model's outputs are: {known}")
            if name in seen:
                raise ServingError(f"output {name!r} is requested more than once")
            seen.add(name)
            _check_supported(spec, "output")
            parameters = _parameters(entry, f"output {name!r}")
            for key in ("shared_memory_region", "classification"):
                if key in parameters:
                    raise ServingError(f"output {name!r}: the parameter {key!r} is not supported "
                                       "by this server")
            as_binary = parameters.get("binary_data", binary_default)
            if type(as_binary) is not bool:
                raise ServingError(f"output {name!r}: binary_data must be true or false")
            wanted.append((name, as_binary))
        return wanted

    def _run(self, names, feeds):
        try:
            if self._bfloat16:
                return self._run_bfloat16(names, feeds)
            return self.session.run(names, feeds)
        except ServingError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ServingError(f"onnxruntime failed: {exc}", 500) from None

    def _run_bfloat16(self, names, feeds):
        """Run a model with BF16 tensors, which reach and leave onnxruntime as OrtValues of bits."""
        ort = sys.modules[type(self.session).__module__.partition(".")[0]]
        for name, array in feeds.items():
            if self._inputs[name].datatype == "BF16":
                feeds[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    _contiguous(array), onnx_element_type=_BFLOAT16)
        if not any(self._outputs[name].datatype == "BF16" for name in names):
            return self.session.run(names, feeds)
        # session.run cannot give a BF16 output back; run_with_ort_values can (no string inputs)
        values = {name: value if isinstance(value, ort.OrtValue) else
                  ort.OrtValue.ortvalue_from_numpy(_contiguous(value)) for name, value in feeds.items()}
        results = []
        for name, value in zip(names, self.session.run_with_ort_values(names, values)):
            if not value.is_tensor():
                raise ServingError(f"output {name!r} is not a tensor; with BF16 outputs, a model can "
                                   "return tensors only", 500)
            if self._outputs[name].datatype == "BF16":
                results.append(_bfloat16_from_ortvalue(value))
            else:
                results.append(value.numpy())
        return results


class InferJob:
    """One checked inference request: its input arrays and the outputs it asks for."""

    __slots__ = ("feeds", "wanted", "request", "names")

    def __init__(self, feeds, wanted, request):
        self.feeds = feeds        # {input name: numpy array}
        self.wanted = wanted      # [(output name, as binary)]
        self.request = request    # the decoded v2 request (None for POST /)
        self.names = [name for name, _ in wanted]

    @property
    def rows(self):
        return next(iter(self.feeds.values())).shape[0]

    def batch_key(self):
        """What jobs must share to be run together, or None when this one must run alone
        (inputs without a common first dimension)."""
        rows = None
        key = []
        for name in sorted(self.feeds):
            array = self.feeds[name]
            if array.ndim == 0 or (rows is not None and array.shape[0] != rows):
                return None
            rows = array.shape[0]
            key.append((name, array.dtype.str, array.shape[1:]))
        return tuple(key), tuple(self.names)


# -- validation and conversion -------------------------------------------------------------------

def _parameters(obj, what):
    parameters = obj.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ServingError(f"\"parameters\" of {what} must be an object")
    return parameters


def _check_supported(spec, kind):
    if spec.datatype is None:
        raise ServingError(f"{kind} {spec.name!r} has type {spec.onnx_type}, which the v2 protocol "
                           "cannot carry")


def _check_shape(spec, shape, name):
    expected = spec.shape
    if len(shape) != len(expected) or any(e != -1 and e != d for e, d in zip(expected, shape)):
        raise ServingError(f"input {name!r} has shape {shape}; the model expects {expected} "
                           "(-1: any size)")
