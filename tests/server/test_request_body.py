"""Receive buffers of large bodies (request_body): reused whatever the body's size, grown
without losing bytes, and never handed out again while something still reads them."""

import json

import pytest

from lite_serving.server.request_body import BodyBuffers, MemoryBody, size_class
from support.servers import module_server
from support.wire import Client

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


# -- a buffer larger than keep_bytes: the largest is kept, up to keep_largest -------------------

def test_the_largest_buffer_over_keep_bytes_is_kept_for_the_next_body():
    buffers = BodyBuffers(keep_bytes=2 * MIB, keep_largest=size_class(16 * MIB))
    body, data = receive(buffers, 6 * MIB + 8, step=MIB)
    first = body.buf
    body.release(body.content())
    again, _ = receive(buffers, 6 * MIB + 8, data=bytes(reversed(data)), step=MIB)
    assert again.buf is first and buffers.made == 1
    assert bytes(again.content()) == bytes(reversed(data))   # its lent pages hold the new bytes
    assert buffers.spare == []   # it is not counted among the spares of keep_bytes


def test_a_buffer_over_keep_largest_is_not_kept():
    buffers = BodyBuffers(keep_bytes=2 * MIB, keep_largest=size_class(4 * MIB))
    body, _ = receive(buffers, 4 * MIB + 8, step=MIB)
    body.release(body.content())
    assert buffers.large == []
    assert MemoryBody(buffers, 4 * MIB + 8).buf is not body.buf


def test_the_largest_buffers_are_kept_up_to_keep_largest_in_all():
    buffers = BodyBuffers(keep_bytes=2 * MIB, keep_largest=size_class(16 * MIB))
    bodies = [receive(buffers, n * MIB, step=MIB)[0] for n in (5, 6, 9)]
    buf5, buf6, buf9 = (body.buf for body in bodies)
    for body in bodies:             # back in that order: the 9 MiB one comes last
        body.release(body.content())
    assert buffers.large == [buf9, buf6]   # 15 MiB; with the 5 MiB one, over 16
    assert MemoryBody(buffers, 5 * MIB).buf is buf6    # the smallest that holds it
    assert MemoryBody(buffers, 2 * MIB).buf is not buf9   # over 4 times its size: a new one
    assert MemoryBody(buffers, 8 * MIB).buf is buf9
    assert buffers.large == []


def test_a_smaller_buffer_does_not_push_out_larger_ones():
    buffers = BodyBuffers(keep_bytes=2 * MIB, keep_largest=size_class(16 * MIB))
    bodies = [receive(buffers, n * MIB, step=MIB)[0] for n in (9, 6, 4)]
    bufs = [body.buf for body in bodies]
    for body in bodies:
        body.release(body.content())
    assert buffers.large == bufs[:2]


def test_a_large_buffer_something_still_reads_is_not_kept():
    buffers = BodyBuffers(keep_bytes=2 * MIB, keep_largest=size_class(16 * MIB))
    body, data = receive(buffers, 6 * MIB, step=MIB)
    content = body.content()
    kept = content[100:200]     # a numpy array over the body would hold it the same way
    buf = body.buf
    body.release(content)
    assert buffers.large == []
    again, _ = receive(buffers, 6 * MIB, data=b"\0" * (6 * MIB), step=MIB)
    assert again.buf is not buf and bytes(kept) == data[100:200]


# -- the same over sockets: a server reuses its largest receive buffer -----------------------------

BUFFER_WATCH = """
    import gc

    from lite_serving.server.request_body import MemoryBody

    seen = []   # the receive buffer of each request, and a view of it when one is kept


    def receiving():
        # the buffer this request's body arrived in (the tests send one request at a time)
        [body] = [o for o in gc.get_objects() if type(o) is MemoryBody and o.buf is not None]
        return body.buf


    class Predictor:
        def predict(self, request):
            buf = receiving()
            answer = {"same_as_last": bool(seen) and seen[-1][0] is buf}
            if seen and seen[-1][1] is not None:
                answer["kept_bytes_intact"] = bytes(seen[-1][1]) == b"first!"
            seen.append((buf, memoryview(buf)[:6] if request.args.get("keep") else None))
            return answer
"""

watch_server = module_server("buffers", BUFFER_WATCH)

BIG = 40 * MIB   # over the 32 MiB of spares kept below keep_largest


def post_big(client, first_bytes, target="/"):
    body = first_bytes + b"b" * (BIG - len(first_bytes))
    client.send(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % (target.encode(), BIG))
    client.send(body)
    reply = client.read()
    assert reply.status == 200, reply
    return json.loads(reply.body)


def test_a_body_over_32_mib_is_received_into_the_buffer_of_the_one_before(watch_server):
    with Client(watch_server) as c:
        post_big(c, b"one")
        second = post_big(c, b"two")          # the next request on the connection
    with Client(watch_server) as c:
        third = post_big(c, b"three")         # and on another one
    assert second["same_as_last"] is True and third["same_as_last"] is True, (second, third)


def test_a_large_buffer_a_predictor_still_reads_is_not_reused(watch_server):
    with Client(watch_server) as c:
        post_big(c, b"first!", "/?keep=1")   # the predictor keeps a view of its body
        answer = post_big(c, b"second")
    assert answer["same_as_last"] is False and answer["kept_bytes_intact"] is True, answer
