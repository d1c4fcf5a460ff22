"""``emit_event(name, data, id=None)``: record a named artefact of the request being served.

Outside production the event is only logged. In production it is POSTed as
MessagePack ``{"id", "name", "data"}`` to the platform's collector. It never
raises into ``predict``.
"""

from lite_serving.common import detect_env
from lite_serving.process.logs import get_logger

log = get_logger("lite_serving.events")

COLLECTOR = ("127.0.0.1", 6666, "/events")
REQUEST_ID_HEADER = "x-openbayes-serving-request-id"


def encode_event_data(data):
    """bytes as they are, str as UTF-8, numbers as decimal text, anything else as JSON text."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return str(data).encode("ascii")
    from lite_serving.codecs.json_codec import dumps_reference  # events are rare: not at start-up
    return dumps_reference(data)


def _placeholder(data):
    if isinstance(data, (bytes, bytearray)):
        return f"<{len(data)} bytes of binary data>"
    if isinstance(data, (list, tuple)):
        return [_placeholder(v) for v in data]
    if isinstance(data, dict):
        return {k: _placeholder(v) for k, v in data.items()}
    return data


def current_request_id():
    """The current request's id: the integer in its X-Openbayes-Serving-Request-Id (what the
    platform's collector files events under), else its X-Request-Id, else the id lite_serving
    made for it (the one its answer and access line carry); 0 outside a request."""
    from lite_serving.http.request_ids import current_head, request_id
    head = current_head()
    if head is None:
        return 0
    for name, value in head.fields:
        if name == REQUEST_ID_HEADER:
            try:
                return int(value)
            except ValueError:
                break
    return request_id(head)


def post_event(body):
    import http.client  # only production posts events; keep start-up light
    host, port, path = COLLECTOR
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/msgpack"})
        conn.getresponse().read()
    finally:
        conn.close()


def emit_event(name, data, id=None):
    """Record event ``name`` with ``data`` for the current request (or request ``id``)."""
    try:
        encoded = encode_event_data(data)
    except Exception as exc:
        log.error("event %r not recorded: its data cannot be encoded: %s", name, exc)
        return
    req_id = id if id is not None else current_request_id()
    if detect_env() != "production":
        log.info("event %s of request %s -> %s", name, req_id or "-", _placeholder(data))
        return
    if type(req_id) is str and not req_id.isdigit():  # the collector files events by number
        log.error("event %r of request %s not recorded: the platform's collector needs the "
                  "number in X-Openbayes-Serving-Request-Id", name, req_id)
        return
    if not req_id:
        log.error("event %r not recorded: it was emitted outside a request and given no id", name)
        return
    import msgpack
    try:
        post_event(msgpack.packb({"id": int(req_id), "name": str(name), "data": encoded},
                                 use_bin_type=True))
    except Exception as exc:
        log.error("event %r not recorded: %s", name, exc)
