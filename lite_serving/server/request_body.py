"""Where a request body goes while it arrives, and the memory budget it is counted in.

Three places a body can be: a ``bytes`` slice of the bytes read with its head
(small bodies, the usual case, handled by the connection itself); a
:class:`MemoryBody`, a buffer whose memory is taken as the bytes come in
(a large one is an anonymous mapping whose pages the kernel supplies when first
written), so memory follows what arrived and never what a client merely
declared; or a
:class:`MultipartSink`, for ``multipart/form-data`` uploads larger than
``--spool-size``: parsed as they arrive, each file part written to a temporary
file of its own. Every body is released once, by
:meth:`RequestView.release <lite_serving.predictor.request_view.RequestView.release>`,
when its answer has been written or its connection is gone.

:class:`MemoryBudget` is the ceiling across connections (``--max-memory``):
bodies are admitted against it before they are read, and read-ahead input
and unsent answers count in it too.
"""

import io
import os

from lite_serving.errors import ServingError
from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")

FIRST_SIZE = 256 * 1024      # a chunked body's buffer starts this large and doubles as bytes arrive
GRAIN = 64 * 1024            # buffer sizes are multiples of this


def size_class(n):
    """The buffer size for ``n`` bytes: rounded up to an eighth of the power of two below ``n``
    (at least GRAIN), so that bodies of nearby sizes share buffers, none over 12.5% too large."""
    step = max(GRAIN, (1 << (n.bit_length() - 1)) >> 3)
    return -(-n // step) * step


HUGE_FROM = 4 * 1024 * 1024  # mappings this large ask for transparent huge pages


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
    hugepage = getattr(mmap, "MADV_HUGEPAGE", None)   # Linux only
    if size >= HUGE_FROM and hugepage is not None:
        try:
            buf.madvise(hugepage)   # one page fault per 2 MiB instead of per 4 KiB
        except OSError:             # huge pages switched off: 4 KiB pages, as without
            pass
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
    except (SystemError, OSError):  # no mremap (macOS): whether it is read cannot be told
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

    Buffers larger than ``keep_bytes`` are not among them: the largest that come back are
    kept apart (``large``), up to ``keep_largest`` bytes in all, so that a service whose
    bodies are all that large sets up no buffer after the first ones. Why holding them is
    safe: ``keep_largest`` is the buffer one body of ``--max-body-size`` takes, memory a
    worker must be able to hold anyway (and there is one such set per worker); while they
    wait, their pages are marked free for the kernel to take back (``MADV_FREE``): under
    memory pressure they are reclaimed before anything else is, instead of the process
    being killed, and otherwise they stay in place, so that the next body is written into
    them without a page fault.
    """

    def __init__(self, keep_bytes=32 * 1024 * 1024, keep_largest=0):
        self.keep_bytes = keep_bytes
        self.keep_largest = keep_largest
        self.spare = []          # oldest first
        self.spare_bytes = 0
        self.large = []          # the buffers over keep_bytes kept, largest first
        self.made = 0            # buffers set up so far (those larger than FIRST_SIZE)

    def take(self, length):
        """A buffer for a body of ``length`` bytes: the smallest spare that holds it (within 4
        times its size), else a new one. ``length`` -1 (a chunked body, of a size not known):
        the largest spare, as likely as any to hold it without growing, else FIRST_SIZE."""
        spare = self.spare
        large = self.large
        best = -1
        if length < 0:
            if large:
                return large.pop(0)   # the largest spare of all
            for i in range(len(spare)):
                if best < 0 or len(spare[i]) > len(spare[best]):
                    best = i
            size = FIRST_SIZE
        else:
            size = size_class(length)
            for i in range(len(spare)):
                n = len(spare[i])
                if size <= n <= 4 * size and (best < 0 or n < len(spare[best])):
                    best = i
            if best < 0:
                for i in range(len(large) - 1, -1, -1):   # the smallest that holds it
                    if size <= len(large[i]) <= 4 * size:
                        return large.pop(i)
        if best < 0:
            if size > FIRST_SIZE:
                self.made += 1
            return new_buffer(size)
        buf = spare.pop(best)
        self.spare_bytes -= len(buf)
        return buf

    def give(self, buf):
        """Keep ``buf`` for a later body (nothing reads it any more)."""
        n = len(buf)
        if n > self.keep_bytes:
            self._keep_large(buf, n)
            return
        spare = self.spare
        while spare and self.spare_bytes + n > self.keep_bytes:
            self.spare_bytes -= len(spare.pop(0))
        spare.append(buf)
        self.spare_bytes += n

    def _keep_large(self, buf, n):
        """Keep the largest buffers that fit in ``keep_largest`` together, ``buf`` among them."""
        if n > self.keep_largest:
            return
        large = self.large
        room = self.keep_largest - n
        i = 0
        while i < len(large) and len(large[i]) >= n:   # the larger ones stay before it
            room -= len(large[i])
            i += 1
        if room < 0:
            return   # the larger ones fill the room already
        kept = large[:i] + [buf]
        for other in large[i:]:     # then the smaller ones, while they fit
            if len(other) <= room:
                kept.append(other)
                room -= len(other)
        self.large = kept
        _lend_to_kernel(buf)


def _lend_to_kernel(buf):
    """Let the kernel take ``buf``'s pages if it runs short of memory (their bytes then read
    as zeros; a body only reads what was written into it). Linux 4.5 and later."""
    if type(buf) is bytearray:
        return
    import mmap
    lazy = getattr(mmap, "MADV_FREE", None)
    if lazy is not None:
        try:
            buf.madvise(lazy)
        except OSError:   # not supported here: the pages stay held, as any spare's are
            pass


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
            bigger = self.buffers.take(size)   # a spare mapping, or a new one
            bigger[:self.got] = memoryview(buf)[:self.got]
            self.buffers.give(buf)
            self.buf = bigger
        else:
            try:
                buf.resize(size)     # mremap: no byte moves
            except (SystemError, OSError):   # no mremap (macOS): a copy into a larger mapping
                bigger = new_buffer(size)
                bigger[:self.got] = buf[:self.got]
                self.buf = bigger

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


SPILL = 1024 * 1024   # bytes of a multipart body outside file parts kept in memory in one run


class MultipartSink:
    """A large ``multipart/form-data`` body, parsed as it arrives.

    The connection writes the body's bytes as they come; a
    :class:`~lite_serving.http.multipart.MultipartParser` finds the parts in them, each file part
    goes to a temporary file of its own, fields are kept as text. Nothing is read twice and
    the body is never whole in memory. The raw body stays readable (:meth:`content`: a file
    reading the parts' bytes in order, for ``data``, ``request.stream``, ``get_data()``);
    what lies outside file parts (delimiters, headers, fields, preamble) is kept in memory,
    a run of more than SPILL bytes in a file. A malformed body is kept the same way, its
    error given to whoever asks for the form (:meth:`parts`).
    """

    __slots__ = ("parser", "got", "length", "error", "segments", "pending", "spill", "spill_size",
                 "part", "upload", "form", "files", "files_open")

    def __init__(self, content_type, length, initial=b""):
        from lite_serving.http.multipart import MultipartParser, _header_params, boundary_of
        from lite_serving.predictor.request_view import MultiDict
        from lite_serving.process import config
        self.length = length
        self.got = 0
        self.error = None
        self.segments = []        # the raw body: bytes, or (file, size) read with os.pread
        self.pending = bytearray()  # the run of literal bytes being gathered
        self.spill = None           # ... or the file it continues in, once over SPILL
        self.spill_size = 0
        self.part = None          # the file of the file part being received
        self.upload = None        # ... and its FileStorage
        self.form = MultiDict()
        self.files = MultiDict()
        self.files_open = []      # every file this body opened, closed by release()
        self.parser = None
        try:
            boundary = boundary_of(_header_params(content_type)[1])
        except ServingError as exc:
            self.error = exc      # kept raw; request.form says what is wrong
        else:
            settings = config.active
            self.parser = MultipartParser(boundary, self, settings.max_form_parts,
                                          settings.max_form_field_size)
        if initial:
            self.write(initial)

    # -- from the connection -------------------------------------------------------

    def write(self, data):
        """Take the next bytes; False (the files closed, the error logged) when they cannot be
        stored."""
        self.got += len(data)
        try:
            if self.parser is None:
                self.literal(data)
                return True
            try:
                self.parser.feed(data)
            except ServingError as exc:
                self._malformed(exc)
        except OSError as exc:
            return self._failed(exc)
        return True

    def finish(self):
        """The body is complete; False (the files closed, the error logged) when what is held
        cannot be written."""
        try:
            if self.parser is not None:
                try:
                    self.parser.close()
                except ServingError as exc:
                    self._malformed(exc)
            self._end_literal()
        except OSError as exc:
            return self._failed(exc)
        return True

    def content(self):
        """The raw body, as a file."""
        return io.BufferedReader(_SegmentsReader(self.segments))

    def parts(self):
        """``(form, files)`` of the body, or its ServingError."""
        if self.error is not None:
            raise self.error
        for _name, upload in self.files.items(multi=True):
            upload.stream.seek(0)
        return self.form, self.files

    def release(self, _body=None):
        for file in self.files_open:
            try:
                file.close()
            except OSError:
                pass
        self.files_open = []

    # -- from the parser ---------------------------------------------------------------

    def literal(self, data):
        if self.spill is not None:
            self.spill.write(data)
            self.spill_size += len(data)
        elif len(self.pending) + len(data) > SPILL:
            self.spill = self._new_file()
            self.spill.write(self.pending)
            self.spill.write(data)
            self.spill_size = len(self.pending) + len(data)
            self.pending = bytearray()
        else:
            self.pending += data

    def field(self, name, value):
        self.form.add(name, value)

    def file_begin(self, name, filename, content_type, headers):
        from lite_serving.http.multipart import FileStorage
        self._end_literal()
        self.part = self._new_file()
        self.upload = FileStorage(self.part, filename, name, content_type, headers, 0)
        self.files.add(name, self.upload)

    def file_data(self, data):
        self.part.write(data)
        self.upload.content_length += len(data)

    def file_end(self):
        self.part.flush()
        self.segments.append((self.part, self.upload.content_length))
        self.part = self.upload = None

    # -- within ----------------------------------------------------------------------

    def _new_file(self):
        import tempfile  # rare path; keeps start-up light
        file = tempfile.TemporaryFile(prefix="lite_serving-upload-")
        self.files_open.append(file)
        return file

    def _end_literal(self):
        """Close the run of literal bytes gathered so far into a segment of the raw body."""
        if self.spill is not None:
            self.spill.flush()
            self.segments.append((self.spill, self.spill_size))
            self.spill = None
        elif self.pending:
            self.segments.append(bytes(self.pending))
            self.pending = bytearray()

    def _malformed(self, exc):
        """Stop parsing: the body is kept raw from here, the error kept for request.form."""
        parser, self.parser = self.parser, None
        self.error = exc
        if self.part is not None:   # the part cut short stays in the raw body
            self.file_end()
        self.literal(parser.unconsumed())

    def _failed(self, exc):
        log.error("cannot write an upload to a temporary file: %s", exc)
        self.release()
        return False


class _SegmentsReader(io.RawIOBase):
    """The raw body of a :class:`MultipartSink` as a file: its segments one after another
    (files read with ``os.pread``: the parts' own files keep their positions)."""

    def __init__(self, segments):
        self.segments = segments
        self.size = sum(len(s) if type(s) is bytes else s[1] for s in segments)
        self.pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, buffer):
        want, done, at = len(buffer), 0, 0
        for segment in self.segments:
            size = len(segment) if type(segment) is bytes else segment[1]
            if at <= self.pos < at + size and done < want:
                offset = self.pos - at
                n = min(size - offset, want - done)
                if type(segment) is bytes:
                    data = segment[offset:offset + n]
                else:
                    data = os.pread(segment[0].fileno(), n, offset)
                buffer[done:done + len(data)] = data
                done += len(data)
                self.pos += len(data)
            at += size
        return done

    def seek(self, offset, whence=io.SEEK_SET):
        base = (0, self.pos, self.size)[whence]
        self.pos = min(max(0, base + offset), self.size)
        return self.pos

    def tell(self):
        return self.pos
