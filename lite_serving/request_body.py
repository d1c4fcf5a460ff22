"""Where a request body goes while it arrives, and the memory budget it is counted in.

Three places a body can be: a ``bytes`` slice of the bytes read with its head
(small bodies, the usual case, handled by the connection itself); a
:class:`MemoryBody`, a buffer that grows as the bytes come in, so memory
follows what arrived and never what a client merely declared; or a
:class:`SpooledBody`, a temporary file for ``multipart/form-data`` uploads
larger than ``--spool-size``. Every body is released once, by
:meth:`RequestView.release <lite_serving.request_view.RequestView.release>`,
when its answer has been written or its connection is gone.

:class:`MemoryBudget` is the ceiling across connections (``--max-memory``):
bodies are admitted against it before they are read, and read-ahead input
and unsent answers count in it too.
"""

from .logs import get_logger

log = get_logger("lite_serving")

FIRST_SIZE = 256 * 1024      # a fresh buffer starts this large and doubles as bytes arrive
_ZEROS = memoryview(bytes(FIRST_SIZE))


class MemoryBudget:
    """Bytes held for clients across all connections, against ``limit``.

    ``reserve`` admits a body before it is read (False: refuse it); ``take``
    counts bytes that are already held (read-ahead input, unsent answers);
    ``give`` returns either. I/O thread only.
    """

    __slots__ = ("limit", "held")

    def __init__(self, limit):
        self.limit = limit
        self.held = 0

    def reserve(self, n):
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def take(self, n):
        self.held += n

    def give(self, n):
        self.held -= n

    @property
    def exhausted(self):
        return self.held >= self.limit


class BodyBuffers:
    """Receive buffers for large bodies, reused from one request to the next.

    A fresh multi-megabyte buffer costs more to allocate (zero-filling new
    pages) than to fill from the socket; keeping a few spares, up to
    ``keep_bytes`` in all, makes a large upload cost one copy from the kernel.
    A spare is memory the process already holds, so handing one out whole
    costs nothing; without a spare a buffer starts small and grows.
    """

    GRAIN = 64 * 1024

    def __init__(self, keep_bytes=32 * 1024 * 1024):
        self.keep_bytes = keep_bytes
        self.spare = []
        self.spare_bytes = 0

    def take(self, length):
        """A spare buffer that holds ``length`` bytes, or a new one of at most FIRST_SIZE."""
        size = -(-length // self.GRAIN) * self.GRAIN
        spare = self.spare
        for i in range(len(spare)):
            if len(spare[i]) == size:
                buf = spare.pop(i)
                self.spare_bytes -= len(buf)
                return buf
        return bytearray(min(size, FIRST_SIZE))

    def give(self, buf):
        if self.spare_bytes + len(buf) <= self.keep_bytes and len(buf) % self.GRAIN == 0:
            self.spare.append(buf)
            self.spare_bytes += len(buf)


class MemoryBody:
    """A body read into a buffer that grows with the bytes received (never beyond ``length``).

    ``length`` is the declared Content-Length, or -1 for a chunked body.
    The request sees the body as a memoryview of the buffer (no copy).
    """

    __slots__ = ("buf", "got", "length", "buffers")

    def __init__(self, buffers, length):
        self.buffers = buffers
        self.length = length
        self.got = 0
        self.buf = buffers.take(length) if length > 0 else bytearray()

    def _grow(self, need):
        """Make room for ``need`` more bytes: double, bounded by the declared length.

        Zeros are appended in pieces, never as one large temporary object.
        """
        buf = self.buf
        cap = len(buf)
        want = max(cap * 2, self.got + need)
        if self.length > 0:
            want = min(want, -(-self.length // BodyBuffers.GRAIN) * BodyBuffers.GRAIN)
        while cap < want:
            step = min(want - cap, len(_ZEROS))
            buf += _ZEROS[:step]
            cap += step

    def room(self, limit):
        """A writable view of the next bytes of the buffer, at most ``limit`` long."""
        if self.got == len(self.buf):
            self._grow(limit)
        end = min(len(self.buf), self.got + limit)
        return memoryview(self.buf)[self.got:end]

    def filled(self, n):
        self.got += n

    def write(self, data):
        """Append ``data``: into the room the buffer has, the rest by growing it as it goes."""
        buf, got, n = self.buf, self.got, len(data)
        fits = min(n, len(buf) - got)
        if fits:
            buf[got:got + fits] = data[:fits] if fits < n else data
        if fits < n:
            buf += data[fits:]   # the bytearray grows by its own amortised steps
        self.got = got + n
        return True

    def content(self):
        """The body for the request: a memoryview of the bytes received."""
        return memoryview(self.buf)[:self.got]

    def release(self, body):
        """Give the buffer back for reuse, unless something derived from ``body`` still lives."""
        buf, self.buf = self.buf, None
        if buf is None:
            return
        if type(body) is memoryview:
            body.release()
        try:
            # views derived from the body (slices, numpy arrays) survive release(); a
            # bytearray cannot change size while any of them lives
            buf.append(0)
            buf.pop()
        except BufferError:  # something still reads it: leave the buffer to it
            return
        self.buffers.give(buf)


class SpooledBody:
    """A large multipart body written to a temporary file as it arrives."""

    __slots__ = ("file", "got", "length")

    def __init__(self, length, initial=b""):
        """Creating the file is part of storing the body: when it fails (a read-only or full
        TMPDIR, no descriptor left) the error is logged and every ``write`` returns False."""
        import tempfile  # rare path; keeps start-up light
        self.length = length
        self.got = 0
        try:
            self.file = tempfile.TemporaryFile(prefix="lite_serving-upload-")
        except OSError as exc:
            self.file = None
            log.error("cannot create a temporary file for an upload: %s", exc)
            return
        if initial:
            self.write(initial)

    def write(self, data):
        """Append ``data``; False (the file closed, the error logged) when it cannot be stored."""
        if self.file is None:
            return False
        try:
            self.file.write(data)
        except OSError as exc:
            return self._failed(exc)
        self.got += len(data)
        return True

    def finish(self):
        """Flush what is buffered; False (the file closed, the error logged) when that fails."""
        if self.file is None:
            return False
        try:
            self.file.flush()
        except OSError as exc:
            return self._failed(exc)
        return True

    def _failed(self, exc):
        log.error("cannot write an upload to a temporary file: %s", exc)
        self.release()
        return False

    def content(self):
        return self.file

    def release(self, _body=None):
        file, self.file = self.file, None
        if file is None:
            return
        try:
            file.close()
        except OSError:  # buffered bytes that cannot be written: the file is gone all the same
            pass
