"""The floor: a raw ASGI app on uvicorn (httptools + uvloop) with no framework at all.

* ``GET``  -> 200 with a tiny JSON document (used as the readiness probe).
* ``POST`` with ``application/msgpack`` -> ``{"n": len(body["data"])}``, like
  ``servers/msgpack/predictor.py``.
* any other ``POST`` -> the JSON body decoded with orjson and encoded back (echo).
"""

import msgpack
import orjson

MSGPACK_TYPES = (b"application/msgpack", b"application/x-msgpack", b"application/vnd.msgpack")
JSON_HEADERS = [(b"content-type", b"application/json")]


async def read_body(receive):
    """Collect every ``http.request`` chunk of the request body."""
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def content_type(scope):
    """The request's content type without parameters, lower-cased."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


def answer(scope, body):
    """The response payload for one request."""
    if scope["method"] != "POST":
        return b'{"status":"ok"}'
    if content_type(scope) in MSGPACK_TYPES:
        return orjson.dumps({"n": len(msgpack.unpackb(body)["data"])})
    return orjson.dumps(orjson.loads(body))


async def lifespan(receive, send):
    """Acknowledge startup and shutdown so uvicorn does not complain."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    """ASGI entry point."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    body = await read_body(receive)
    payload = answer(scope, body)
    await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": payload})
