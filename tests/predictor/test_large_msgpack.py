"""MessagePack bodies with bin and ext values of 32 MiB and more (body_decoder.LARGE_VALUE):
predict receives what it receives for smaller ones (bytes, arrays, ExtType, the same keys and
errors), from the compiled codec and the pure-Python one alike; with the compiled codec, the
bytes of a large bin value are in memory that asked for huge pages."""

import hashlib
import json
import sys

import msgpack
import pytest

from lite_serving.codecs.array_ext import pack_array_ext
from lite_serving.predictor.body_decoder import LARGE_VALUE
from support.compiled import CODEC
from support.http_client import post
from support.servers import module_server

np = pytest.importorskip("numpy")

SOURCE = """
    import hashlib

    import msgpack
    import numpy as np


    def advised_huge(value):
        # whether the mapping holding the middle of value's bytes asked for huge pages (VmFlags hg)
        middle = id(value) + bytes.__basicsize__ - 1 + len(value) // 2
        inside = False
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):
                    start, end = (int(x, 16) for x in first.split("-"))
                    inside = start <= middle < end
                elif inside and first == "VmFlags:":
                    return "hg" in line.split()[1:]
        return None


    def describe(value):
        if type(value) is bytes:
            return ["bytes", len(value), hashlib.sha256(value).hexdigest(), advised_huge(value)]
        if type(value) is np.ndarray:
            return ["ndarray", value.dtype.str, list(value.shape), bool(value.flags.writeable),
                    hashlib.sha256(value.tobytes()).hexdigest()]
        if type(value) is msgpack.ExtType:
            return ["ExtType", value.code, len(value.data), hashlib.sha256(value.data).hexdigest()]
        return [type(value).__name__, repr(value)]


    class Predictor:
        def predict(self, json):
            return [[repr(k), describe(v)] for k, v in json.items()]
"""

compiled_server = module_server("large-msgpack-compiled", SOURCE, env={"LITE_SERVING_PURE": "0"})
pure_server = module_server("large-msgpack-pure", SOURCE, env={"LITE_SERVING_PURE": "1"})

MIB = 1024 * 1024
BIG = bytes(range(256)) * (40 * MIB // 256)          # 40 MiB
ARRAY = np.arange(9 * MIB, dtype="<f4").reshape(3, -1)   # 36 MiB of elements


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["compiled", "pure"])
def server(request):
    if request.param == "compiled":
        CODEC.get()
        return request.getfixturevalue("compiled_server")
    return request.getfixturevalue("pure_server")


def described(server, body):
    reply = post(server, body, "application/msgpack")
    assert reply.status == 200, reply
    return {k: v for k, v in json.loads(reply.body)}


def test_a_large_bin_value_is_bytes_beside_the_other_values(server):
    body = msgpack.packb({"x": BIG, "meta": {"shape": [1, 2], "name": "n"}, b"raw": b"small",
                          "x2": BIG[:LARGE_VALUE]})
    got = described(server, body)
    assert list(got) == ["'x'", "'meta'", "b'raw'", "'x2'"]
    assert got["'x'"][:3] == ["bytes", len(BIG), sha(BIG)]
    assert got["'x2'"][:3] == ["bytes", LARGE_VALUE, sha(BIG[:LARGE_VALUE])]
    assert got["'meta'"] == ["dict", repr({"shape": [1, 2], "name": "n"})]
    assert got["b'raw'"][:3] == ["bytes", 5, sha(b"small")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge pages: Linux")
def test_with_the_compiled_codec_a_large_bin_value_is_in_memory_that_asked_for_huge_pages(
        compiled_server):
    CODEC.get()
    got = described(compiled_server, msgpack.packb({"x": BIG}))
    assert got["'x'"] == ["bytes", len(BIG), sha(BIG), True]


def test_large_ext_values_are_arrays_and_ext_types(server):
    body = (b"\x83\xa1a" + pack_array_ext(ARRAY) + b"\xa1e" + msgpack.packb(msgpack.ExtType(9, BIG))
            + b"\xa1k" + msgpack.packb(msgpack.ExtType(9, b"tiny")))
    got = described(server, body)
    assert got["'a'"] == ["ndarray", "<f4", [3, 3 * MIB], False, sha(ARRAY.tobytes())]
    assert got["'e'"] == ["ExtType", 9, len(BIG), sha(BIG)]
    assert got["'k'"] == ["ExtType", 9, 4, sha(b"tiny")]


def test_a_repeated_key_keeps_its_place_and_last_value_as_msgpack_does(server):
    body = b"\x83\xa1x" + msgpack.packb(BIG) + b"\xa1y\x01\xa1x" + msgpack.packb(b"last")
    got = described(server, body)
    assert list(got) == ["'x'", "'y'"] and got["'x'"][:2] == ["bytes", 4]


@pytest.mark.parametrize("defect, small", [
    (lambda body: body + b"\x00", lambda body: body + b"\x00"),
    (lambda body: body[:-1], lambda body: body[:-1]),
    (lambda body: b"\x82\x01\x02" + body[1:], lambda body: b"\x82\x01\x02" + body[1:]),   # int key
])
def test_a_large_body_msgpack_refuses_gets_the_answer_a_small_one_gets(server, defect, small):
    large = post(server, defect(msgpack.packb({"x": BIG})), "application/msgpack")
    expected = post(server, small(msgpack.packb({"x": b"small"})), "application/msgpack")
    assert large.status == expected.status == 400
    assert json.loads(large.body) == json.loads(expected.body)
