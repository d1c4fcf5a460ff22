"""What each worker of ``--workers`` tells its supervisor, through memory they share.

The supervisor makes a :class:`Board` before it starts any worker: one record a
worker process (3 × ``--workers`` + 2 records, so that workers that are still
draining and their replacements can run side by side). A worker writes its own record
(:class:`Beat`); the supervisor only reads. A record holds:

- ``pid``: the worker writing it (a record left by a dead worker is not read);
- ``state``: STARTING (building its predictor), READY (listening), SATURATED
  (every predict thread is held by a call past ``--predict-timeout``: it
  accepts no connections), STUCK (so for longer than the timeout again);
- ``beat``: ``time.monotonic()`` of its I/O loop's last tick (about once a
  second; CLOCK_MONOTONIC is the same clock in every process of a machine);
- ``reason``: why it failed to start, for the supervisor's last word.

After the records, the board holds the rows of ``/metrics`` (``metrics.SharedFigures``): one
per record, written by its worker, and one where the supervisor keeps the counts of workers
that have exited, so that one scrape of any worker reports the whole server. A header says how
many records there are and how wide a row is (a worker of another version, started by a
reload, whose rows would not match, then reports only itself).

The memory is a memfd (a file with no name; any fd-backed file elsewhere), so
that a worker started by exec (a reload) maps it by its descriptor too.
Writes are whole aligned words, so the supervisor never reads half a value.
"""

import mmap
import os
import struct

STARTING, READY, SATURATED, STUCK = 0, 1, 2, 3
STATE_NAMES = ("starting", "ready", "saturated", "stuck")

_HEAD = struct.Struct("=qqdq")      # pid, state, beat, length of the reason
_BOARD = struct.Struct("=qq")       # records, width of a metrics row (in doubles)
RECORD = 512
REASON = RECORD - _HEAD.size


class Board:
    """The shared records (supervisor side: it makes them and reads them)."""

    def __init__(self, records):
        from lite_serving.app.metrics import WIDTH
        self.records = records
        size = _BOARD.size + records * RECORD + (records + 1) * WIDTH * 8
        try:
            self.fd = os.memfd_create("lite_serving-workers")
        except (AttributeError, OSError):
            import tempfile
            handle = tempfile.TemporaryFile(prefix="lite_serving-workers-")
            self.fd = os.dup(handle.fileno())
            handle.close()
        os.ftruncate(self.fd, size)
        self.map = mmap.mmap(self.fd, size)
        _BOARD.pack_into(self.map, 0, records, WIDTH)
        self.figures = _figures(self.map)
        self._free = list(range(records - 1, -1, -1))

    def take(self, pid=0):
        """A free record, cleared (None when every record is in use)."""
        if not self._free:
            return None
        index = self._free.pop()
        _HEAD.pack_into(self.map, _offset(index), pid, STARTING, 0.0, 0)
        return index

    def give_back(self, index):
        """The worker of record ``index`` has exited: its counts are kept, its record freed."""
        self.figures.retire(index)
        _HEAD.pack_into(self.map, _offset(index), 0, STARTING, 0.0, 0)
        self._free.append(index)

    def read(self, index):
        """``(pid, state, beat, reason)`` of a record."""
        pid, state, beat, length = _HEAD.unpack_from(self.map, _offset(index))
        start = _offset(index) + _HEAD.size
        reason = bytes(self.map[start:start + max(0, min(length, REASON))]).decode("utf-8", "replace")
        return pid, state, beat, reason

    def close(self):
        self.figures = None   # its view of the map goes first
        self.map.close()
        os.close(self.fd)


def _offset(index):
    return _BOARD.size + index * RECORD


def _figures(buffer):
    """The board's metrics rows as a SharedFigures, or None when its rows are not this version's."""
    from lite_serving.app.metrics import WIDTH, SharedFigures
    records, width = _BOARD.unpack_from(buffer, 0)
    if width != WIDTH:
        return None
    start = _BOARD.size + records * RECORD
    return SharedFigures(memoryview(buffer)[start:start + (records + 1) * WIDTH * 8], records + 1)


class Beat:
    """One worker's record (worker side)."""

    def __init__(self, buffer, index):
        self.map = buffer
        self.index = index
        self.offset = _offset(index)
        self.pid = os.getpid()
        self.state = STARTING
        self.last = 0.0
        self._write(STARTING, 0.0)

    @classmethod
    def attach(cls, fd, index):
        """In a worker started by exec: map the board by its inherited descriptor."""
        buffer = mmap.mmap(fd, os.fstat(fd).st_size)
        os.close(fd)
        return cls(buffer, index)

    def shared_figures(self):
        """The board's metrics rows (None when they are another version's); this worker's row
        is ``index``."""
        return _figures(self.map)

    def _write(self, state, beat):
        pid, _state, _beat, length = _HEAD.unpack_from(self.map, self.offset)
        _HEAD.pack_into(self.map, self.offset, self.pid, state, beat, length)

    def beat(self, now):
        self.last = now
        self._write(self.state, now)

    def ready(self, now):
        self.state = READY
        self.beat(now)

    def set_health(self, health):
        """From the server's predict health (0 healthy, 1 saturated, 2 stuck)."""
        self.state = (READY, SATURATED, STUCK)[health]
        self._write(self.state, self.last)

    def failed(self, reason):
        data = reason.encode("utf-8", "replace")[:REASON]
        self.map[self.offset + _HEAD.size:self.offset + _HEAD.size + len(data)] = data
        _HEAD.pack_into(self.map, self.offset, self.pid, self.state, 0.0, len(data))
