"""Streamed answers: a body produced piece by piece, sent with chunked transfer coding.

A stream's pieces come from the predictor's iterable on a thread of its own
(a generator may wait between pieces, as token-by-token answers do), and are
handed to the I/O thread, which writes them in order. The thread stops
producing while more than ``HIGH_WATER`` bytes wait to be written (back-pressure
from a slow reader) and stops for good when the client goes away; the
iterable is closed either way.
"""

import threading

from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
END = object()      # posted after the last piece
ABORT = object()    # posted when the stream failed: the connection is closed


class StreamBody:
    """An answer body taken from ``pieces`` (an iterable of bytes or str)."""

    __slots__ = ("pieces", "on_close", "head", "chunked", "context", "queued", "handed", "written",
                 "cancelled", "window")

    def __init__(self, pieces, on_close=None):
        self.pieces = pieces
        self.on_close = on_close if on_close is not None else getattr(pieces, "close", None)
        self.head = b""
        self.chunked = True
        self.context = None   # the request's contextvars, for the thread that produces the pieces
        self.queued = 0       # bytes posted to the I/O thread (stream thread only)
        self.handed = 0       # bytes the I/O thread handed to the transport (I/O thread only)
        self.written = 0      # bytes the socket took (I/O thread only)
        self.cancelled = False
        self.window = threading.Event()

    def backlog(self):
        return self.queued - self.written

    def close(self):
        """Close the producer (its ``close()``), once; a failure is logged, never raised."""
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            try:
                on_close()
            except BaseException:
                log.exception("closing the streamed body failed")

    def cancel(self):
        self.cancelled = True
        self.window.set()


def _as_bytes(piece):
    if isinstance(piece, bytes):
        return piece
    if isinstance(piece, str):
        return piece.encode("utf-8")
    if isinstance(piece, (bytearray, memoryview)):
        return bytes(piece)
    raise TypeError(f"a streamed body yielded {type(piece).__name__}; pieces must be bytes or str")


def send(stream, piece, post):
    """Post a piece (a chunk on HTTP/1.1), counted in ``queued``; an empty piece is not sent (an
    empty chunk would end the body). False once the stream is cancelled."""
    if stream.cancelled:
        return False
    piece = _as_bytes(piece)
    if piece:
        data = b"%x\r\n%s\r\n" % (len(piece), piece) if stream.chunked else piece
        stream.queued += len(data)
        post(data)
    return True


def held_back(stream):
    """Whether the producer must wait: more than HIGH_WATER bytes not yet taken by the socket."""
    return stream.backlog() > HIGH_WATER and not stream.cancelled


def finish(stream, post):
    """After the last piece: the final chunk, and END; ABORT when the stream was cancelled."""
    if stream.cancelled:
        return ABORT
    if stream.chunked:
        post(b"0\r\n\r\n")
    return END


def log_failure(stream, exc):
    log.error("the streamed answer failed after %d bytes (%s); closing the connection",
              stream.queued, type(exc).__name__, exc_info=not isinstance(exc, GeneratorExit))


def pump(stream, post):
    """Run on a stream thread: iterate the body and ``post(data)`` each framed piece, then END/ABORT.

    END or ABORT is posted however the producer ends, a ``BaseException``
    (``GeneratorExit``, ``CancelledError``, ``GreenletExit``...) included.
    """
    end = ABORT
    try:
        for piece in stream.pieces:
            if not send(stream, piece, post):
                break
            while held_back(stream):
                stream.window.clear()
                if held_back(stream):
                    stream.window.wait(1.0)
        end = finish(stream, post)
    except BaseException as exc:
        log_failure(stream, exc)
    finally:
        try:
            stream.close()
        finally:
            post(end)


def start(stream, post):
    """Produce ``stream`` on a thread of its own, in the context of the request it answers
    (an async iterable: as a task on the asyncio loop thread)."""
    if hasattr(stream.pieces, "__aiter__"):
        from lite_serving.server.async_predict import start_stream
        return start_stream(stream, post)
    context = stream.context
    if context is None:
        target, args = pump, (stream, post)
    else:
        target, args = context.run, (pump, stream, post)
    thread = threading.Thread(target=target, args=args, name="lite_serving-stream", daemon=True)
    thread.start()
    return thread
