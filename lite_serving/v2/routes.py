"""The Open Inference Protocol (KServe v2) over HTTP/REST for one ONNX model.

Pure Python, no sockets: the router hands a complete request to :func:`handle`
and writes back what it returns. numpy is imported inside the functions that
need it, and onnxruntime is never imported here (the caller passes a ready
session), so importing this module costs nothing when v2 is unused.

Interface
---------
``V2Model(session, name, version="1")``
    Wraps an ``onnxruntime.InferenceSession``; reads its inputs and outputs
    once. Attributes ``name``, ``version``, ``session``. Thread-safe: several
    threads may call ``infer`` at once.

    ``metadata() -> dict``
        ``{"name", "versions", "platform": "onnxruntime_onnx", "inputs",
        "outputs"}``; each tensor is ``{"name", "datatype", "shape"}`` with
        dynamic dimensions as -1.
    ``infer(request: dict, binary: bytes | memoryview | None) -> (dict, list)``
        ``request`` is the decoded JSON inference request, ``binary`` the
        bytes after the JSON header (binary tensor data extension). Returns
        the response object (``data`` may hold flat numpy arrays) and the list
        of raw output chunks (bytes-like, in the order of the outputs that
        carry ``binary_data_size``; empty when every output is JSON). Bad
        requests raise ``ServingError(message, 400)``; onnxruntime failures
        ``ServingError(message, 500)``. :func:`encode_infer_response` turns the
        pair into an HTTP answer.
    ``simple_infer(obj) -> dict``
        For ``POST /``: ``{"inputs": {name: nested list}}`` →
        ``{"outputs": {name: numpy array}}`` with every model output (what
        onnxruntime returns: arrays, or lists/dicts for sequence and map
        outputs); shapes and element types are checked like ``infer``'s;
        bad input → ``ServingError`` 400.

``handle(model, method, path, body, header_get) -> tuple | None``
    ``path`` is the request path without the query (a query is ignored if
    present; segments are percent-decoded here); ``header_get(name)`` returns
    a request header's value or None, case-insensitively. Returns None when
    ``path`` is outside ``/v2``; otherwise an ``Answer(status, content_type, body,
    extra)`` (``lite_serving.http.replies``): ``status`` an int, ``content_type`` and ``body``
    bytes, ``extra_header_lines`` ready ``b"Name: value\\r\\n"`` lines (e.g.
    ``Inference-Header-Content-Length`` or ``Allow``). HEAD is answered like
    GET; the router sends the head only. Every error is JSON ``{"error": ...}``.
``is_infer(path) -> bool``
    True for the inference routes (``POST`` there runs the model; the router
    should run them off the I/O thread).

Routes
------
- ``GET /v2``: server metadata; ``GET /v2/health/live``, ``/v2/health/ready``;
- ``GET /v2/models/{name}[/versions/{v}]``: model metadata;
- ``GET /v2/models/{name}[/versions/{v}]/ready``;
- ``POST /v2/models/{name}[/versions/{v}]/infer``.

Unknown model or version → 404; a wrong method → 405 with ``Allow``; other
paths under ``/v2`` → 404. A request body with a ``Content-Encoding`` other
than ``identity`` → 415.

Binary tensor data
------------------
A request header ``Inference-Header-Content-Length: N`` makes the first N
bytes of the body the JSON header and the rest raw tensor data, consumed in
order by the inputs whose ``parameters`` hold ``binary_data_size``
(little-endian, row-major; BOOL one byte per element; BF16 the upper two
bytes of the float32; BYTES elements as a 4-byte little-endian length and the
bytes). Outputs asked for with
``"parameters": {"binary_data": true}`` (or all outputs, with the request
parameter ``binary_data_output: true``; an output's own ``binary_data`` wins)
come back the same way: the answer is ``application/octet-stream`` with an
``Inference-Header-Content-Length`` header, and each such output carries
``"parameters": {"binary_data_size": n}`` instead of ``data``.

Notes
-----
- JSON ``data`` is checked, not coerced: integer datatypes take integers in
  range, FP16/BF16/FP32/FP64 numbers within the datatype's finite range (the
  nearest value is taken, ties to even; NaN and infinities are kept), BOOL
  ``true``/``false`` and nothing else, BYTES strings (UTF-8 text, which
  onnxruntime string tensors hold). A boolean is not a number here.
- BF16 tensors: numpy has no bfloat16, so they are held as their uint16 bits
  and handed to onnxruntime as ``OrtValue``s; a model with BF16 outputs is run
  with ``run_with_ort_values``, which takes no string inputs.
- Element conversions run in numpy or in the tensor codec (``codec``): no
  Python code runs per element, BYTES included.
- Outputs the protocol has no datatype for (ONNX sequences and maps) show
  their ONNX type in the metadata, are left out of an answer that names no
  outputs, and are a 400 when asked for by name.
- JSON cannot hold NaN or infinities: such output values are written as
  ``null``; ask for binary outputs to keep them. NaN/Infinity tokens in a
  request are accepted.
- Also public: ``V2Model.metadata_json`` (the metadata, encoded once),
  :func:`server_metadata` and :func:`encode_infer_response`.
"""

import json as _stdlib_json
import math
import sys
from operator import methodcaller
from urllib.parse import unquote

import orjson

from lite_serving.codecs import json_codec
from lite_serving.codecs.codec import join_length_prefixed, split_length_prefixed
from lite_serving.errors import ServingError
from lite_serving.http.replies import Answer
from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")

SERVER_NAME = "lite_serving"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = json_codec.JSON_TYPE
BINARY_TYPE = b"application/octet-stream"

# v2 datatype → (numpy type name, ONNX tensor type); BYTES is a numpy object array of str.
DATATYPES = {
    "BOOL": ("bool", "tensor(bool)"),
    "UINT8": ("uint8", "tensor(uint8)"),
    "UINT16": ("uint16", "tensor(uint16)"),
    "UINT32": ("uint32", "tensor(uint32)"),
    "UINT64": ("uint64", "tensor(uint64)"),
    "INT8": ("int8", "tensor(int8)"),
    "INT16": ("int16", "tensor(int16)"),
    "INT32": ("int32", "tensor(int32)"),
    "INT64": ("int64", "tensor(int64)"),
    "FP16": ("float16", "tensor(float16)"),
    "BF16": ("uint16", "tensor(bfloat16)"),  # the bits: numpy has no bfloat16
    "FP32": ("float32", "tensor(float)"),
    "FP64": ("float64", "tensor(double)"),
    "BYTES": ("object", "tensor(string)"),
}
ONNX_TO_V2 = {onnx_type: v2 for v2, (_, onnx_type) in DATATYPES.items()}
# numpy dtype (kind, itemsize) → v2 datatype, for what onnxruntime returns
_KIND_TO_V2 = {
    ("b", 1): "BOOL", ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
    ("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64",
    ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64",
}
_FLOATS = ("FP16", "BF16", "FP32", "FP64")
# the Python types JSON data may hold for each datatype (integer datatypes: int), and their words
_JSON_TYPES = {"BOOL": {bool}, "BYTES": {str}, **{d: {int, float} for d in _FLOATS}}
_NEEDS = {"BOOL": "true/false", "BYTES": "strings", **{d: "numbers" for d in _FLOATS}}
_FOUND = {bool: "booleans", int: "integers", float: "floating-point numbers", str: "strings",
          type(None): "nulls", dict: "objects", list: "nested lists"}
_BFLOAT16 = 16  # ONNX TensorProto.BFLOAT16

_NOT_ALLOWED = "method {method} is not allowed on {path}"
_server_metadata = None


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


def _array_from_json(data, datatype, numpy_type, name):
    """JSON ``data`` (flat or nested) → a numpy array of ``numpy_type``; a wrong element → 400.

    Checked, not coerced: every element's Python type must be one the datatype
    takes (a boolean is no number), and every value must fit the datatype.
    """
    import numpy as np

    needs = _NEEDS.get(datatype, "integers")
    ragged = (f"input {name!r}: data must be a flat list, or nested lists of equal lengths, "
              f"of {needs}")
    try:
        items = np.array(data, dtype=object)  # the shape nested lists make; elements untouched
    except (ValueError, TypeError, RecursionError):
        raise ServingError(ragged) from None
    flat = items.ravel().tolist()
    wrong = set(map(type, flat)) - _JSON_TYPES.get(datatype, {int})
    if wrong:
        if list in wrong or tuple in wrong:
            raise ServingError(ragged)
        found = " or ".join(sorted(_FOUND.get(kind, f"{kind.__name__} values") for kind in wrong))
        raise ServingError(f"input {name!r}: {datatype} data must be {needs}, not {found}")
    if datatype == "BYTES":
        return items
    if datatype == "BOOL":
        return items.astype(bool)
    if datatype in _FLOATS:
        return _floats_from_json(np, items, datatype, numpy_type, name)
    info = np.iinfo(numpy_type)
    if flat:
        low, high = min(flat), max(flat)
        if low < info.min or high > info.max:
            raise ServingError(f"input {name!r}: the value {low if low < info.min else high} in data "
                               f"lies outside {datatype} [{info.min}, {info.max}]")
    return np.array(flat, dtype=numpy_type).reshape(items.shape)


def _floats_from_json(np, items, datatype, numpy_type, name):
    """Numbers → FP16/BF16/FP32/FP64, nearest value; a finite number past the range → 400."""
    largest = _BFLOAT16_MAX if datatype == "BF16" else float(np.finfo(numpy_type).max)
    try:
        values = items.astype(np.float64)
    except OverflowError:  # an integer past even float64
        values = None
    if values is not None:
        if datatype == "BF16":
            array = _bfloat16_bits(np, values)
            infinite = (array & 0x7FFF) == 0x7F80
        else:
            with np.errstate(over="ignore"):
                array = values.astype(numpy_type)
            infinite = np.isinf(array)
        overflow = infinite & np.isfinite(values)
        if not overflow.any():
            return array
        value = f"the value {float(values[overflow][0])!r}"
    else:
        value = "an integer"
    raise ServingError(f"input {name!r}: {value} in data lies outside {datatype} "
                       f"[{-largest!r}, {largest!r}]")


_BFLOAT16_MAX = 3.3895313892515355e+38  # (2 - 2**-7) * 2**127


def _bfloat16_bits(np, values):
    """float64 values → the bits (uint16) of the nearest bfloat16, ties to even.

    float64 is rounded to float32 *to odd* first: rounding to nearest twice
    could land on a tie between two bfloat16 the value was not on.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        single = values.astype(np.float32)
    back = single.astype(np.float64)
    bits = single.view(np.uint32)
    bits[np.abs(back) > np.abs(values)] -= 1  # toward zero: a float32 magnitude one step down
    bits[back != values] |= 1
    bits += 0x7FFF + ((bits >> 16) & 1)
    result = (bits >> 16).astype(np.uint16)
    nan = np.isnan(values)
    result[nan] = np.where(np.signbit(values[nan]), 0xFFC0, 0x7FC0)
    return result


def _bfloat16_values(bits):
    """BF16 bits (uint16) → the same values as float32, which JSON encoders can write."""
    import numpy as np

    return (bits.astype(np.uint32) << 16).view(np.float32)


def _bfloat16_from_ortvalue(value):
    """A BF16 OrtValue → a uint16 array of its bits (copied: the OrtValue owns its memory)."""
    import ctypes

    import numpy as np

    shape = value.shape()
    count = math.prod(shape)
    raw = ctypes.string_at(value.data_ptr(), 2 * count) if count else b""
    return np.frombuffer(raw, dtype=np.uint16).reshape(shape)


def _contiguous(array):
    return array if array.flags.c_contiguous else array.copy(order="C")


def _array_from_binary(data, datatype, numpy_type, shape, count, name):
    """A slice of the binary part → a numpy array of ``shape``; sizes and contents checked."""
    import numpy as np

    if datatype == "BYTES":
        try:
            items = split_length_prefixed(data, decode=True)
        except ValueError as exc:
            raise ServingError(f"input {name!r}: BYTES binary data {exc}") from None
        if len(items) != count:
            raise ServingError(f"input {name!r} has {len(items)} BYTES elements in its binary data; "
                               f"shape {shape} needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    wire = np.dtype(numpy_type).newbyteorder("<")
    needed = count * wire.itemsize
    if len(data) != needed:
        raise ServingError(f"input {name!r} has binary_data_size {len(data)}; shape {shape} of "
                           f"{datatype} needs {needed} bytes")
    if datatype == "BOOL" and needed and np.frombuffer(data, dtype=np.uint8).max() > 1:
        raise ServingError(f"input {name!r}: BOOL binary data must be bytes 0 or 1")
    array = np.frombuffer(data, dtype=wire)
    if not array.dtype.isnative or not array.flags.aligned:
        array = array.astype(np.dtype(numpy_type))  # a native, aligned copy
    return array.reshape(shape)


def _output_array(name, value):
    import numpy as np

    if not isinstance(value, np.ndarray):
        raise ServingError(f"output {name!r} is a {type(value).__name__}, not a tensor; the v2 "
                           "protocol carries tensors only", 500)
    return value


def _datatype_of(array, name):
    kind = array.dtype.kind
    if kind in "OUS":
        return "BYTES"
    datatype = _KIND_TO_V2.get((kind, array.dtype.itemsize))
    if datatype is None:
        raise ServingError(f"output {name!r} has numpy type {array.dtype}, which the v2 protocol "
                           "cannot carry", 500)
    return datatype


def _text(item):
    if isinstance(item, (bytes, bytearray)):
        return item.decode("utf-8", "replace")
    return str(item)


_DECODE = methodcaller("decode", "utf-8", "replace")


def _texts(items):
    """BYTES elements → JSON strings: str as they are, bytes as UTF-8 (bad bytes replaced)."""
    kinds = set(map(type, items))
    if kinds <= {str}:
        return items
    if kinds <= {bytes}:
        return list(map(_DECODE, items))
    return list(map(_text, items))


def _to_json_data(array, datatype):
    """The flat ``data`` of a JSON output: a native contiguous numpy array orjson writes directly."""
    if datatype == "BYTES":
        return _texts(array.ravel().tolist())
    if datatype == "BF16":
        array = _bfloat16_values(array)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array.ravel()


def _to_binary(array, datatype):
    """An output's raw bytes: little-endian row-major (no copy when already so), or BYTES elements."""
    if datatype == "BYTES":
        return join_length_prefixed(array.ravel().tolist())
    little = array.dtype.byteorder == "<" or array.dtype.byteorder == "|" or (
        array.dtype.byteorder == "=" and sys.byteorder == "little")
    if little and array.flags.c_contiguous:
        return memoryview(array).cast("B") if array.size else b""
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def encode_json(obj):
    return json_codec.dumps(obj, bytes_as=json_codec.TEXT)  # the protocol's BYTES are text


def encode_infer_response(response, parts):
    """What :meth:`V2Model.infer` returned → (content type, body, extra header lines)."""
    header = encode_json(response)
    if not parts:
        return JSON_TYPE, header, b""
    body = b"".join([header, *parts])
    return BINARY_TYPE, body, b"%s: %d\r\n" % (HEADER_LENGTH.encode("ascii"), len(header))


# -- routing ------------------------------------------------------------------------------------

def _reply(status, obj, extra=b""):
    return Answer(status, JSON_TYPE, encode_json(obj), extra)


def _error(status, message, extra=b""):
    return _reply(status, {"error": message}, extra)


def server_metadata():
    global _server_metadata
    if _server_metadata is None:
        from lite_serving import __version__

        _server_metadata = encode_json({"name": SERVER_NAME, "version": __version__,
                                        "extensions": list(EXTENSIONS)})
    return _server_metadata


def _segments(path):
    """``/v2/a/b`` → ``["a", "b"]`` (percent-decoded), or None outside ``/v2``."""
    query = path.find("?")
    if query >= 0:
        path = path[:query]
    if path != "/v2" and not path.startswith("/v2/"):
        return None
    parts = path[4:].split("/") if len(path) > 4 else []
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash is tolerated
    if any("%" in part for part in parts):
        parts = [unquote(part, errors="replace") for part in parts]
    return parts


def _model_route(parts):
    """``["models", name, ("versions", v,) (action)]`` → (name, version or None, action or None)."""
    if len(parts) < 2 or parts[0] != "models":
        return None
    name, rest = parts[1], parts[2:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        version, rest = rest[1], rest[2:]
    if not rest:
        return name, version, ""
    if len(rest) == 1 and rest[0] in ("ready", "infer"):
        return name, version, rest[0]
    return None


def is_infer(path):
    """True for ``/v2/models/{name}[/versions/{v}]/infer``: where POST runs the model."""
    parts = _segments(path)
    if parts is None:
        return False
    route = _model_route(parts)
    return route is not None and route[2] == "infer"


def handle(model, method, path, body, header_get, run=True):
    """One request → its :class:`~lite_serving.http.replies.Answer`, or None outside /v2.

    ``run=False`` (for batches): an inference request that is valid comes back
    as its :class:`InferJob` instead, to be run with others (:meth:`V2Model.run_batch`)
    and answered by :func:`infer_reply`.
    """
    parts = _segments(path)
    if parts is None:
        return None
    try:
        return _route(model, method, path, parts, body, header_get, run)
    except ServingError as exc:
        return _serving_error_reply(exc)
    except Exception as exc:
        log.exception("v2 %s %s failed", method, path)
        return _error(500, f"{type(exc).__name__}: {exc}")


def infer_reply(model, job, results):
    """The answer to ``job`` from its ``results`` (output arrays, or the ServingError of its run)."""
    try:
        if isinstance(results, ServingError):
            raise results
        response, outputs = model.respond(job, results)
        content_type, data, extra = encode_infer_response(response, outputs)
        return Answer(200, content_type, data, extra)
    except ServingError as exc:
        return _serving_error_reply(exc)
    except Exception as exc:
        log.exception("v2 inference answer failed")
        return _error(500, f"{type(exc).__name__}: {exc}")


def _serving_error_reply(exc):
    status = exc.status_code if isinstance(exc.status_code, int) else 500
    return _reply(status, exc.payload)


def _route(model, method, path, parts, body, header_get, run=True):
    is_get = method == "GET" or method == "HEAD"
    if not parts or parts in (["health", "live"], ["health", "ready"]):
        if not is_get:
            return _error(405, _NOT_ALLOWED.format(method=method, path=path), b"Allow: GET, HEAD\r\n")
        if not parts:
            return Answer(200, JSON_TYPE, server_metadata(), b"")
        return _reply(200, {parts[1]: True})
    route = _model_route(parts)
    if route is None:
        return _error(404, f"no v2 route for {path}; see /v2/models/{model.name}, "
                           f"/v2/models/{model.name}/ready and POST /v2/models/{model.name}/infer")
    name, version, action = route
    if name != model.name:
        return _error(404, f"unknown model {name!r}; this server serves {model.name!r}")
    if version is not None and version != model.version:
        return _error(404, f"model {name!r} has no version {version!r}; its versions are: "
                           f"{model.version!r}")
    if action == "infer":
        if method != "POST":
            return _error(405, _NOT_ALLOWED.format(method=method, path=path), b"Allow: POST\r\n")
        return _infer(model, body, header_get, run)
    if not is_get:
        return _error(405, _NOT_ALLOWED.format(method=method, path=path), b"Allow: GET, HEAD\r\n")
    if action == "ready":
        return _reply(200, {"name": model.name, "ready": True})
    return Answer(200, JSON_TYPE, model.metadata_json, b"")


def _infer(model, body, header_get, run=True):
    encoding = header_get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        return _error(415, f"Content-Encoding {encoding.strip()} is not supported; send the body "
                           "uncompressed")
    view = memoryview(body if body is not None else b"")
    declared = header_get(HEADER_LENGTH)
    if declared is None:
        header, binary = view, None
    else:
        declared = declared.strip()
        if not (declared.isascii() and declared.isdigit()):
            return _error(400, f"{HEADER_LENGTH} must be a non-negative integer, not {declared!r}")
        length = int(declared)
        if length > len(view):
            return _error(400, f"{HEADER_LENGTH} is {length} but the body has only {len(view)} bytes")
        header, binary = view[:length], view[length:]
    request = _decode_header(header)
    job = model.prepare(request, binary)
    if not run:
        return job
    response, outputs = model.respond(job, model._run(job.names, job.feeds))
    content_type, data, extra = encode_infer_response(response, outputs)
    return Answer(200, content_type, data, extra)


def _decode_header(header):
    try:
        return orjson.loads(header)
    except orjson.JSONDecodeError as first:
        try:  # what orjson refuses but Python's json takes: NaN, Infinity, huge integers
            return _stdlib_json.loads(bytes(header))
        except (ValueError, TypeError):
            raise ServingError(f"the inference request is not valid JSON: {first}") from None
