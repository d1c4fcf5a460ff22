"""``GET /openapi.json``: an OpenAPI 3.1 description of what this server serves.

``POST /`` with the bodies its ``predict`` reads (JSON and MessagePack; forms
and uploads for a predictor that asks for ``request``; any bytes for ``data``
and ``payload``) and its answers, the probes, ``/metrics``, and for an ONNX
model the ``/v2`` routes with the model's own input and output names,
datatypes and shapes. A predictor class may declare ``input_schema`` and
``output_schema`` (JSON Schema dicts) and ``input_example``: they describe
``POST /`` here and prefill the ``/docs`` page. They describe; they are not
enforced.

Built once, at the first request for it, from the built predictor.
"""

from lite_serving import __version__
from lite_serving.predictor.encoder import encode_json

JSON_SCHEMA_ATTRIBUTES = ("input_schema", "output_schema")
MSGPACK = "application/msgpack"
EXAMPLE_ELEMENTS = 4096   # v2 example tensors larger than this are left out of the description
_ERROR = {"$ref": "#/components/schemas/Error"}


def predictor_attributes(cls):
    """``{"input_schema", "output_schema", "input_example"}`` as the class declares them (None
    when absent)."""
    return {name: getattr(cls, name, None)
            for name in JSON_SCHEMA_ATTRIBUTES + ("input_example",)}


def _error(description):
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json_answer(description, schema, example=None):
    media = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


def _body_kinds(loaded):
    """The provider keys ``predict`` (or ``predict_batch``) asks for."""
    return {key for _, key, _ in loaded.predict_plan}


def _predict_operation(loaded, attributes, model):
    kinds = _body_kinds(loaded)
    schema = attributes["input_schema"] or {}
    example = attributes["input_example"]
    if example is None and model is not None and type(loaded.instance).__name__ == "OnnxModelPredictor":
        example = {"inputs": {t.name: _zeros(t.shape, t.datatype) for t in model.inputs
                              if _size(t.shape) <= EXAMPLE_ELEMENTS}}
        schema = schema or _simple_onnx_schema(model)
    structured = {"schema": schema}
    if example is not None:
        structured["example"] = example
    content = {}
    if kinds & {"json", "payload", "data", "request"}:
        content = {"application/json": structured, MSGPACK: {"schema": schema}}
    if "request" in kinds:
        content["multipart/form-data"] = {"schema": {
            "type": "object", "properties": {"file": {"type": "string", "contentMediaType":
                                                      "application/octet-stream"}}}}
        content["application/x-www-form-urlencoded"] = {"schema": {"type": "object"}}
    if kinds & {"payload", "data"}:
        content["application/octet-stream"] = {"schema": {"type": "string", "contentMediaType":
                                                          "application/octet-stream"}}
    output = attributes["output_schema"] or {}
    answers = {"application/json": {"schema": output}, MSGPACK: {"schema": output}}
    if not attributes["output_schema"]:
        answers.update({"text/plain": {"schema": {"type": "string"}}, "image/png": {},
                        "image/jpeg": {}, "application/octet-stream": {}})
    operation = {
        "summary": "Run predict",
        "description": _predict_description(loaded),
        "operationId": "predict",
        "responses": {
            "200": {"description": "What predict returned: JSON, or MessagePack when Accept "
                                   "prefers it; text, images or bytes as returned", "content": answers},
            "400": _error("The body cannot be decoded, or predict raised ServingError"),
            "406": _error("No acceptable media type (use application/json or application/msgpack)"),
            "413": _error("The body is over --max-body-size"),
            "500": _error("predict failed"),
            "503": _error("The predictor is loading, or the server is shutting down"),
        },
    }
    if content:
        operation["requestBody"] = {"required": "json" in kinds, "content": content}
    return operation


def _predict_description(loaded):
    doc = (type(loaded.instance).__doc__ or "").strip()
    uses = ", ".join(name if name == key else f"{name} ({key})" for name, key, _ in loaded.predict_plan)
    text = f"predict reads: {uses or 'nothing of the request'}."
    return f"{doc}\n\n{text}" if doc else text


def _simple_onnx_schema(model):
    return {"type": "object", "required": ["inputs"], "properties": {"inputs": {
        "type": "object", "required": [t.name for t in model.inputs],
        "properties": {t.name: {"type": "array", "description": f"{t.datatype} {t.shape}"}
                       for t in model.inputs}}}}


def _size(shape):
    size = 1
    for dim in shape:
        size *= dim if dim > 0 else 1
    return size


def _zero(datatype):
    return False if datatype == "BOOL" else "" if datatype == "BYTES" else 0


def _zeros(shape, datatype="FP32"):
    """Nested lists of zeros of ``shape`` (a dynamic dimension taken as 1)."""
    value = _zero(datatype)
    for dim in reversed(shape):
        value = [value] * (dim if dim > 0 else 1)
    return value


def _probe(summary, status_schema):
    return {"get": {"summary": summary, "security": [], "responses": {
        "200": _json_answer("Yes", status_schema),
        "503": _json_answer("Not now", status_schema)}}}


def _tensor_schema(tensor):
    shape = tensor.shape
    dims = [{"const": d} if d >= 0 else {"type": "integer", "minimum": 0} for d in shape]
    return {
        "title": tensor.name,
        "description": f"{tensor.name}: {tensor.datatype} of shape {shape} (-1: any size)",
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": tensor.name},
            "datatype": {"const": tensor.datatype},
            "shape": {"type": "array", "prefixItems": dims, "minItems": len(shape),
                      "maxItems": len(shape)},
            "data": {"type": "array", "description": "flat or nested, row-major"},
            "parameters": {"type": "object"},
        },
    }


def _v2_paths(model):
    base = f"/v2/models/{model.name}"
    metadata = {"type": "object", "properties": {
        "name": {"const": model.name}, "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": {"type": "object"}},
        "outputs": {"type": "array", "items": {"type": "object"}}}}
    example = {"inputs": [{"name": t.name, "shape": [d if d > 0 else 1 for d in t.shape],
                           "datatype": t.datatype, "data": _flat_zeros(t)}
                          for t in model.inputs]}
    request = {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": {"oneOf": [_tensor_schema(t) for t in model.inputs]}},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"enum": [t.name for t in model.outputs]}, "parameters": {"type": "object"}}}},
        "parameters": {"type": "object"}}}
    answer = {"type": "object", "properties": {
        "model_name": {"const": model.name}, "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"oneOf": [_tensor_schema(t) for t in model.outputs]}}}}
    infer_body = {"schema": request}
    if all(_size(t.shape) <= EXAMPLE_ELEMENTS for t in model.inputs):
        infer_body["example"] = example
    ready = {"type": "object"}
    return {
        "/v2": {"get": {"summary": "Server metadata (Open Inference Protocol)",
                        "responses": {"200": _json_answer("Name, version, extensions", {"type": "object"})}}},
        base: {"get": {"summary": f"Metadata of {model.name}: inputs and outputs",
                       "responses": {"200": _json_answer("Inputs and outputs with datatype and shape",
                                                         metadata, model.metadata())}}},
        base + "/ready": {"get": {"summary": f"Whether {model.name} is ready",
                                  "responses": {"200": _json_answer("Ready", ready)}}},
        base + "/infer": {"post": {
            "summary": f"Run {model.name} (Open Inference Protocol)",
            "description": "Inputs: " + "; ".join(t.summary() for t in model.inputs)
                           + ". Outputs: " + "; ".join(t.summary() for t in model.outputs) + ".",
            "operationId": "v2_infer",
            "requestBody": {"required": True, "content": {"application/json": infer_body}},
            "responses": {"200": _json_answer("The outputs", answer),
                          "400": _error("An input does not fit the model"),
                          "404": _error("No such model")}}},
    }


def _flat_zeros(tensor):
    return [_zero(tensor.datatype)] * _size(tensor.shape)


def document(app):
    """The OpenAPI document (a dict) of ``app`` once its predictor is built."""
    loaded = app.predictor
    config = app.config
    cls = type(loaded.instance)
    attributes = predictor_attributes(cls)
    model = app.v2_model
    keys = bool(config.api_keys or config.api_key_file)
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    paths = {
        "/": {
            "get": {"summary": "Whether POST / runs predict", "responses": {
                "200": _json_answer("Ready", {"type": "object"}),
                "503": _error("Loading or shutting down")}},
            "post": _predict_operation(loaded, attributes, model),
        },
        "/healthz": _probe("Liveness: the server's loop turns", status),
        "/readyz": _probe("Readiness: POST / would run predict", status),
        "/v2/health/live": _probe("Liveness (Open Inference Protocol)", status),
        "/v2/health/ready": _probe("Readiness (Open Inference Protocol)", status),
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "Prometheus text format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This description", "responses": {
            "200": _json_answer("OpenAPI 3.1", {"type": "object"})}}},
        "/docs": {"get": {"summary": "A page to try the model", "security": [], "responses": {
            "200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    }
    if model is not None:
        paths.update(_v2_paths(model))
    doc = {
        "openapi": "3.1.0",
        "info": {"title": cls.__name__, "version": __version__,
                 "description": f"{cls.__name__}, served by lite_serving {__version__}."},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "string"}}}}},
        "x-lite-serving": {
            "async": bool(loaded.is_async),
            "reads": sorted(_body_kinds(loaded)),
            "model": model.metadata() if model is not None else None,
        },
    }
    if keys:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        doc["security"] = [{"bearer": []}, {"apiKey": []}]
        unauthorised = _error("No valid API key")
        for item in paths.values():
            for operation in item.values():
                if operation.get("security") != []:
                    operation["responses"]["401"] = unauthorised
        if not config.protect_metrics:
            paths["/metrics"]["get"]["security"] = []
    return doc


def document_bytes(app):
    """The document as JSON bytes."""
    return encode_json(document(app))
