"""Replies: what the server writes for one request, and the functions that build them.

A reply is ``(status, data, close)`` (:class:`Reply` names the fields): ``data``
is the bytes to write (head and body) or a
:class:`~lite_serving.predictor.stream.StreamBody` whose head is ready in
``stream.head``; ``close`` says whether the connection ends after it. Status 0
is a request dropped unanswered. The builders return plain tuples in
:class:`Reply`'s order: one is made for every answer, and a tuple subclass costs
about 0.15 µs more to make and is slower to unpack (CPython's fast paths take
exact tuples only). The server's I/O layer
imports this module and nothing of the application; an :class:`Answer` is
what the application has before it is a reply: status, content type, body and
extra header lines, not yet framed for the request's head.
"""

from collections import namedtuple

from lite_serving.codecs.json_codec import JSON_TYPE
from lite_serving.codecs.json_codec import dumps as encode_json
from lite_serving.http.request_ids import LONGEST, request_id
from lite_serving.response import build_head, build_stream_head, cors_headers, has_body

# (namedtuple, not typing.NamedTuple: typing imports re, which a start does without)
Reply = namedtuple("Reply", ("status", "data", "close"))
Reply.__doc__ = "The bytes of one answer (or its stream) and whether the connection closes after it."
Answer = namedtuple("Answer", ("status", "content_type", "body", "extra"))
Answer.__doc__ = "An answer before it is framed for its request: ``extra`` is ready header lines."


def json_reply(status, obj, head=None, close=False, extra=b""):
    """A JSON answer; ``head`` (the request's) decides version, keep-alive and CORS."""
    body = encode_json(obj)
    return bytes_reply(status, JSON_TYPE, body, head, close, extra)


def bytes_reply(status, content_type, body, head=None, close=False, extra=b"", send_body=True):
    """A reply with ``body`` (left out for HEAD, and with its Content-Length for 204/304)."""
    if head is None:
        version, keep_alive, own = 1, False, b""
    else:
        version, keep_alive = head.version, head.keep_alive and not close
        rid = head.request_id
        if not rid or len(rid) > LONGEST:  # request_id(head), inlined
            rid = request_id(head)
        own = b"X-Request-Id: %s\r\n" % rid.encode("latin-1")
        if head.origin is not None:
            extra += cors_headers(head.origin)
        if head.method == "HEAD":
            send_body = False
    if status == 204 or status == 304:  # no body, and no Content-Length (RFC 9110 §8.6)
        return (status, build_head(status, content_type, None, extra, version, keep_alive, own),
                not keep_alive)
    if send_body and body:
        return (status, build_head(status, content_type, len(body), extra, version, keep_alive,
                                   own) + body, not keep_alive)
    return (status, build_head(status, content_type, len(body), extra, version, keep_alive, own),
            not keep_alive)


def stream_reply(status, content_type, stream, head, extra=b""):
    """A reply whose data is a :class:`StreamBody`; its head is ready in ``stream.head``.

    An answer that has no body (204, 304, HEAD) is sent as a plain head and
    the stream is closed without being read.
    """
    if not has_body(status, head.method):
        stream.close()
        return bytes_reply(status, content_type, b"", head, extra=extra)
    keep_alive = head.keep_alive and head.version == 1
    if head.origin is not None:
        extra += cors_headers(head.origin)
    stream.chunked = head.version == 1
    own = b"X-Request-Id: %s\r\n" % request_id(head).encode("latin-1")
    stream.head = build_stream_head(status, content_type, extra, head.version, keep_alive, own)
    return status, stream, not keep_alive


def refusal(view, status, message, extra=b""):
    """An error answer to ``view``, its message kept for the access line."""
    view.reason = message
    return json_reply(status, {"error": message}, view.head, extra=extra)


def error_reply(status, message, head=None):
    """The answer to a request the server refuses; the connection closes after it."""
    return json_reply(status, {"error": message}, head, close=True)
