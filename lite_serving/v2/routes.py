"""The Open Inference Protocol (KServe v2) over HTTP/REST for one ONNX model: the routes.

Pure Python, no sockets: the application hands a complete request to
:func:`handle` and frames the :class:`~lite_serving.http.replies.Answer` it
returns (None: the path is outside ``/v2``). ``header_get(name)`` gives a
request header's value or None. ``HEAD`` is answered like ``GET`` (the
application leaves the body out). :func:`is_infer` names the routes where
``POST`` runs the model, which the application runs off the I/O thread; with
``run=False`` (batches) a valid inference request comes back as its
:class:`~lite_serving.v2.model.InferJob`, answered later by :func:`infer_reply`.
numpy is imported by the functions that need it and onnxruntime never: importing
this costs nothing when v2 is unused. The protocol as served: docs/v2.md.
"""

import json as _stdlib_json
from urllib.parse import unquote

import orjson

from lite_serving.codecs import json_codec
from lite_serving.errors import ServingError
from lite_serving.http.replies import Answer
from lite_serving.process.logs import get_logger
from lite_serving.v2.tensors import encode_json

log = get_logger("lite_serving")

SERVER_NAME = "lite_serving"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = json_codec.JSON_TYPE
BINARY_TYPE = b"application/octet-stream"

_NOT_ALLOWED = "method {method} is not allowed on {path}"
_server_metadata = None


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
