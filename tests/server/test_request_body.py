"""Receive buffers of large bodies (request_body): reused whatever the body's size, grown
without losing bytes, and never handed out again while something still reads them."""

import pytest

from lite_serving.server.request_body import BodyBuffers, MemoryBody, size_class

MIB = 1024 * 1024


def receive(buffers, length, data=None, step=200_000):
    """A MemoryBody filled the way the connection fills a Content-Length body (room/filled)."""
    body = MemoryBody(buffers, length)
    data = data if data is not None else bytes(range(256)) * (length // 256) + b"z" * (length % 256)
    while body.got < length:
        room = body.room(length - body.got)
        n = min(len(room), step)
        room[:n] = data[body.got:body.got + n]
        room.release()
        body.filled(n)
    return body, data


@pytest.mark.parametrize("length", [MIB, MIB + 8, 3 * MIB + 5, 4 * MIB + 8, 300_001])
def test_a_buffer_is_reused_by_the_next_body_of_the_same_size(length):
    buffers = BodyBuffers()
    body, data = receive(buffers, length)
    first = body.buf
    content = body.content()
    assert bytes(content) == data
    body.release(content)
    again, _ = receive(buffers, length)
    assert again.buf is first   # no new buffer, no growth: one copy from the kernel


def test_a_body_takes_the_smallest_spare_that_holds_it():
    buffers = BodyBuffers()
    small, _ = receive(buffers, MIB + 8)
    large, _ = receive(buffers, 2 * MIB + 8)
    small_buf, large_buf = small.buf, large.buf
    small.release(small.content())
    large.release(large.content())
    assert MemoryBody(buffers, MIB).buf is small_buf
    assert MemoryBody(buffers, 2 * MIB).buf is large_buf


def test_the_oldest_spares_make_room_for_newer_ones():
    buffers = BodyBuffers(keep_bytes=4 * MIB)
    bodies = [receive(buffers, 2 * MIB)[0] for _ in range(3)]
    bufs = [body.buf for body in bodies]
    for body in bodies:
        body.release(body.content())
    assert buffers.spare_bytes <= 4 * MIB
    assert [id(b) for b in buffers.spare] == [id(bufs[1]), id(bufs[2])]


def test_a_buffer_something_still_reads_is_not_handed_out_again():
    buffers = BodyBuffers()
    body, data = receive(buffers, 2 * MIB + 8)
    content = body.content()
    kept = content[10:20]          # a slice the predictor keeps (a numpy array would do the same)
    buf = body.buf
    body.release(content)
    assert MemoryBody(buffers, 2 * MIB + 8).buf is not buf
    assert bytes(kept) == data[10:20]


@pytest.mark.parametrize("pieces", [[100] * 10, [70_000] * 40, [3 * MIB, 5, MIB + 1]])
def test_a_chunked_body_grows_and_keeps_every_byte(pieces):
    buffers = BodyBuffers()
    body = MemoryBody(buffers, -1)
    sent = b""
    for i, n in enumerate(pieces):
        piece = bytes([i % 251]) * n
        body.write(piece)
        sent += piece
    assert bytes(body.content()) == sent


def test_size_classes_are_within_an_eighth_and_multiples_of_64_kib():
    for n in (1, 65536, 65537, MIB, MIB + 8, 5 * MIB + 3, 64 * MIB + 8):
        size = size_class(n)
        assert size >= n and size % 65536 == 0
        assert size - n < max(65536, n // 8 + 1)


def test_a_chunked_body_takes_the_largest_spare_and_grows_no_more():
    buffers = BodyBuffers()
    first = MemoryBody(buffers, -1)
    for _ in range(30):
        first.write(b"c" * 100_000)          # grown to a mapping of 3 MiB or so
    grown = first.buf
    first.release(first.content())
    small, _ = receive(buffers, 300_000)     # a smaller spare beside it
    small.release(small.content())
    again = MemoryBody(buffers, -1)
    assert again.buf is grown
    for _ in range(30):
        again.write(b"d" * 100_000)
    assert again.buf is grown and bytes(again.content()) == b"d" * 3_000_000
