"""Where a request body goes while it arrives, and the memory budget it is counted in.

Three places a body can be: a ``bytes`` slice of the bytes read with its head
(small bodies, the usual case, handled by the connection itself); a
:class:`MemoryBody`, a buffer whose memory is taken as the bytes come in
(a large one is an anonymous mapping whose pages the kernel supplies when first
written), so memory follows what arrived and never what a client merely
declared; or a
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

FIRST_SIZE = 256 * 1024      # a chunked body's buffer starts this large and doubles as bytes arrive
GRAIN = 64 * 1024            # buffer sizes are multiples of this


def size_class(n):
    """The buffer size for ``n`` bytes: rounded up to an eighth of the power of two below ``n``
    (at least GRAIN), so that bodies of nearby sizes share buffers, none over 12.5% too large."""
    step = max(GRAIN, (1 << (n.bit_length() - 1)) >> 3)
    return -(-n // step) * step


HUGE_FROM = 4 * 1024 * 1024
_HUGEPAGE = 14   # MADV_HUGEPAGE (Linux); None where madvise says no


def new_buffer(size):
    """A zero-filled writable buffer of ``size`` bytes.

    Above FIRST_SIZE, an anonymous mapping: the kernel hands out zeroed pages as bytes are
    first written into them, so the process holds what arrived, not what was declared, no
    byte is written twice, and growing it (``resize``: mremap) moves no bytes.
    """
    if size <= FIRST_SIZE:
        return bytearray(size)
    import mmap  # first large body only: start-up stays light
    # private: plain anonymous memory (a shared one is a shmem file, which mremap cannot grow)
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    if size >= HUGE_FROM and _HUGEPAGE is not None:
        buf.madvise(_HUGEPAGE)   # one page fault per 2 MiB instead of per 4 KiB
    return buf


def _exported(buf):
    """Whether something (a slice, a numpy array over the body) still reads ``buf``."""
    try:
        if type(buf) is bytearray:
            buf.append(0)   # a bytearray cannot change size while a view of it lives
            buf.pop()
        else:
            buf.resize(len(buf))  # nor can a mapping
    except BufferError:
        return True
    return False


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

    A fresh multi-megabyte buffer costs more to set up (the kernel zeroing each new page as
    it is first touched) than to fill from the socket; keeping recent buffers, up to
    ``keep_bytes`` in all (the oldest go first), makes a large upload cost one copy from
    the kernel. A body takes the smallest spare that holds it.
    """

    def __init__(self, keep_bytes=32 * 1024 * 1024):
        self.keep_bytes = keep_bytes
        self.spare = []          # oldest first
        self.spare_bytes = 0

    def take(self, length):
        """A buffer for a body of ``length`` bytes (-1: not known, a chunked body)."""
        size = size_class(length) if length > 0 else FIRST_SIZE
        spare = self.spare
        best = -1
        for i in range(len(spare)):
            n = len(spare[i])
            if size <= n and (best < 0 or n < len(spare[best])):
                best = i
        if best >= 0 and (length < 0 or len(spare[best]) <= 4 * size):
            buf = spare.pop(best)
            self.spare_bytes -= len(buf)
            return buf
        return new_buffer(size)

    def give(self, buf):
        """Keep ``buf`` for a later body (nothing reads it any more)."""
        n = len(buf)
        if n > self.keep_bytes:
            return
        spare = self.spare
        while spare and self.spare_bytes + n > self.keep_bytes:
            self.spare_bytes -= len(spare.pop(0))
        spare.append(buf)
        self.spare_bytes += n


class MemoryBody:
    """A body read into a buffer (never beyond ``length``), grown as bytes arrive when chunked.

    ``length`` is the declared Content-Length, or -1 for a chunked body.
    The request sees the body as a memoryview of the buffer (no copy).
    """

    __slots__ = ("buf", "got", "length", "buffers")

    def __init__(self, buffers, length):
        self.buffers = buffers
        self.length = length
        self.got = 0
        self.buf = buffers.take(length)

    def _grow(self, need):
        """Make room for ``need`` more bytes: at least double (a chunked body)."""
        buf = self.buf
        size = size_class(max(len(buf) * 2, self.got + need))
        if type(buf) is bytearray:
            if size <= FIRST_SIZE:
                buf.extend(bytes(size - len(buf)))
                return
            bigger = new_buffer(size)
            bigger[:self.got] = memoryview(buf)[:self.got]
            self.buffers.give(buf)
            self.buf = bigger
        else:
            buf.resize(size)

    def room(self, limit):
        """A writable view of the next bytes of the buffer, at most ``limit`` long."""
        if self.got == len(self.buf):
            self._grow(limit)
        end = min(len(self.buf), self.got + limit)
        return memoryview(self.buf)[self.got:end]

    def filled(self, n):
        self.got += n

    def write(self, data):
        """Append ``data``, growing the buffer when it is full."""
        got, n = self.got, len(data)
        if got + n > len(self.buf):
            self._grow(n)
        self.buf[got:got + n] = data
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
        if not _exported(buf):   # else the buffer is left to what still reads it
            self.buffers.give(buf)


class SpooledBody:
    """A large multipart body written to a temporary file as it arrives."""

    __slots__ = ("file", "got", "length")

    def __init__(self, length, initial=b""):
        import tempfile  # rare path; keeps start-up light
        self.file = tempfile.TemporaryFile(prefix="lite_serving-upload-")
        self.length = length
        self.got = 0
        if initial:
            self.write(initial)

    def write(self, data):
        """Append ``data``; False (the file closed, the error logged) when it cannot be stored."""
        try:
            self.file.write(data)
        except OSError as exc:
            return self._failed(exc)
        self.got += len(data)
        return True

    def finish(self):
        """Flush what is buffered; False (the file closed, the error logged) when that fails."""
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
        try:
            self.file.close()
        except OSError:  # buffered bytes that cannot be written: the file is gone all the same
            pass
