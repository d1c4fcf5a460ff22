"""Server-sent events: ``return serv.event_stream(generator)`` from ``predict``.

Each item the generator yields becomes one event: a ``str`` is its data, a
``dict`` may give ``data`` (str, or anything JSON-encodable), ``event``, ``id``
and ``retry``. Events are flushed to the client as they are produced.
"""

import re

from lite_serving.predictor.encoder import encode_json
from lite_serving.response import Response

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def format_event(item):
    """One item → the text of one event (ends with a blank line)."""
    if isinstance(item, dict):
        fields = []
        for key in ("event", "id", "retry"):
            if key in item:
                fields.append(f"{key}: {_one_line(str(item[key]))}\n")
        data = item.get("data", "")
    else:
        fields, data = [], item
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    elif not isinstance(data, str):
        data = encode_json(data).decode("utf-8")
    # CR LF, CR and LF each end a line of an event stream: every line gets its own "data:"
    fields.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    return "".join(fields) + "\n"


def _one_line(text):
    return text.replace("\r", " ").replace("\n", " ")


def event_stream(events, status=200, headers=None):
    """A streamed ``text/event-stream`` :class:`Response` of ``events`` (an iterable, or an
    async iterable such as an async generator)."""
    if hasattr(events, "__aiter__"):
        async def async_pieces():
            try:
                async for item in events:
                    yield format_event(item)
            finally:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
        return _stream_response(async_pieces(), status, headers)

    def pieces():
        try:
            for item in events:
                yield format_event(item)
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()
    return _stream_response(pieces(), status, headers)


def _stream_response(pieces, status, headers):
    extra = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    extra.update(headers or {})
    return Response(pieces, status=status, headers=extra, content_type="text/event-stream")
