"""The multipart push parser (``multipart.MultipartParser``) as a pure function of the bytes fed:
the same parts whatever the pieces the body arrives in (delimiters split anywhere), every byte
handed on once and in order, errors that leave the rest of the body to the caller."""

import random

import pytest

from lite_serving.errors import ServingError
from lite_serving.http.multipart import MultipartParser, parse_multipart

B = b"XyZ-boundary"


class Recorder:
    """A handler that keeps every event, and the raw body as handed on."""

    def __init__(self):
        self.events = []
        self.raw = bytearray()
        self.current = None

    def literal(self, data):
        self.raw += data

    def field(self, name, value):
        self.events.append(("field", name, value))

    def file_begin(self, name, filename, content_type, headers):
        self.current = bytearray()
        self.events.append(("file", name, filename, content_type))

    def file_data(self, data):
        self.current += data
        self.raw += data

    def file_end(self):
        self.events.append(("content", bytes(self.current)))


def body(*parts, preamble=b"", epilogue=b""):
    out = preamble
    for head, content in parts:
        out += b"--" + B + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n"
    return out + b"--" + B + b"--\r\n" + epilogue


SAMPLE = body(
    (b'Content-Disposition: form-data; name="a"', b"first value"),
    (b'Content-Disposition: form-data; name="f"; filename="x.bin"\r\nContent-Type: image/png',
     b"\r\n--XyZ-boundar" + bytes(range(256)) * 40 + b"\r\n-"),   # near-delimiters inside
    (b'Content-Disposition: form-data; name="b"', b""),
    (b'Content-Disposition: form-data; name="empty"; filename="e.txt"', b""),
    preamble=b"ignored preamble\r\n", epilogue=b"ignored epilogue")


def parse_in(pieces):
    handler = Recorder()
    parser = MultipartParser(B, handler)
    for piece in pieces:
        parser.feed(piece)
    parser.close()
    return handler


def split(data, sizes):
    out, at = [], 0
    for n in sizes:
        out.append(data[at:at + n])
        at += n
    return out + [data[at:]]


def test_the_parts_in_order():
    got = parse_in([SAMPLE])
    content = b"\r\n--XyZ-boundar" + bytes(range(256)) * 40 + b"\r\n-"
    assert got.events == [("field", "a", "first value"), ("file", "f", "x.bin", "image/png"),
                          ("content", content), ("field", "b", ""),
                          ("file", "empty", "e.txt", "application/octet-stream"),
                          ("content", b"")]
    assert bytes(got.raw) == SAMPLE


@pytest.mark.parametrize("cut", range(1, 200))
def test_a_body_cut_in_two_anywhere_gives_the_same_parts(cut):
    whole = parse_in([SAMPLE])
    got = parse_in([SAMPLE[:cut], SAMPLE[cut:]])
    assert got.events == whole.events and bytes(got.raw) == SAMPLE


@pytest.mark.parametrize("seed", range(20))
def test_a_body_in_random_pieces_gives_the_same_parts(seed):
    rng = random.Random(seed)
    sizes = [rng.choice([1, 2, 3, 7, 16, 100, 1000]) for _ in range(len(SAMPLE))]
    got = parse_in(split(SAMPLE, sizes))
    assert got.events == parse_in([SAMPLE]).events and bytes(got.raw) == SAMPLE


def test_the_one_piece_parse_agrees():
    form, files = parse_multipart(SAMPLE, B)
    assert form.to_dict(flat=False) == {"a": ["first value"], "b": [""]}
    assert files["f"].read().startswith(b"\r\n--XyZ-boundar") and files["empty"].read() == b""


@pytest.mark.parametrize("data,status,message", [
    (b"no delimiter here", 400, "never appears"),
    (b"--" + B + b"junk\r\n", 400, "bad boundary line"),
    (b"--" + B + b"\r\nContent-Type: text/plain\r\n\r\nv\r\n--" + B + b"--", 400, "Content-Disposition"),
    (b"--" + B + b'\r\nContent-Disposition: form-data; name="a"\r\n\r\nv', 400, "closing boundary"),
    (b"--" + B + b'\r\nContent-Disposition: form-data; name="a"\r\n', 400, "headers never end"),
    (b"--" + B + b"\r\nno colon\r\n\r\nv\r\n--" + B + b"--", 400, "without a colon"),
])
def test_malformed_bodies(data, status, message):
    for pieces in ([data], [data[:5], data[5:]], list(data[i:i + 1] for i in range(len(data)))):
        with pytest.raises(ServingError, match=message) as caught:
            parse_in(pieces)
        assert caught.value.status_code == status


def test_after_an_error_the_unconsumed_bytes_complete_the_raw_body():
    data = body((b'Content-Disposition: form-data; name="a"', b"x" * 50),
                (b"Content-Disposition: attachment", b"y"), epilogue=b"tail")
    handler = Recorder()
    parser = MultipartParser(B, handler)
    with pytest.raises(ServingError):
        for at in range(0, len(data), 9):
            parser.feed(data[at:at + 9])
    at += 9
    assert bytes(handler.raw) + parser.unconsumed() + data[at:] == data


def test_limits_are_413():
    too_many = body(*[(b'Content-Disposition: form-data; name="f"', b"v")] * 4)
    with pytest.raises(ServingError, match="more than 3 parts") as caught:
        MultipartParser(B, Recorder(), max_parts=3).feed(too_many)
    assert caught.value.status_code == 413
    big = body((b'Content-Disposition: form-data; name="f"', b"v" * 11))
    parser = MultipartParser(B, Recorder(), max_field=10)
    with pytest.raises(ServingError, match="larger than 10 bytes") as caught:
        for i in range(len(big)):
            parser.feed(big[i:i + 1])
    assert caught.value.status_code == 413
