"""numpy arrays in MessagePack as one ext value (``array_ext``): decoded into arrays over the
received bytes for predict, encoded the same way in answers when ``Accept`` asks for it, and
nothing changed for clients that send and accept plain MessagePack."""

import msgpack
import numpy as np
import pytest

from lite_serving.codecs.array_ext import (
    ARRAY_EXT,
    ArrayFormError,
    ext_hook,
    pack_array_ext,
    unpack_array,
)
from support.http_client import post
from support.servers import module_server

SOURCE = """
    import numpy as np
    import openbayes_serving as serv


    class Predictor:
        def predict(self, json):
            x = json["x"]
            if json.get("echo"):
                return {"x": x, "double": np.asarray(x) * 2, "tag": "echo"}
            out = {"type": type(x).__name__}
            if isinstance(x, np.ndarray):
                out.update(dtype=x.dtype.str, shape=list(x.shape), sum=float(x.sum()),
                           writeable=bool(x.flags.writeable))
            return out


    if __name__ == "__main__":
        serv.run(Predictor)
"""

PACKED = "application/msgpack"
ARRAYS = [
    np.arange(10, dtype="<f4"),
    np.arange(12, dtype=">i8").reshape(3, 4),
    np.zeros((0, 3)),
    np.array(3.5),
    np.array([True, False, True]),
    np.arange(12, dtype=np.complex64).reshape(3, 4)[:, ::2],   # not contiguous
    np.ones((2, 2), dtype=np.float16),
    np.arange(70000, dtype=np.uint16),
]


server = module_server("arrays", SOURCE)


def send(server, obj, accept=None, **packb):
    body = msgpack.packb(obj, use_bin_type=True, **packb)
    return post(server, body, PACKED, headers=[("Accept", accept)] if accept else None)


def ext_of(array):
    """The array as the ext value msgpack-python would write for it."""
    return msgpack.unpackb(pack_array_ext(array), ext_hook=lambda code, data: msgpack.ExtType(code, data))


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{list(a.shape)}")
def test_an_array_round_trips_with_its_dtype_shape_and_values(array):
    back = msgpack.unpackb(pack_array_ext(array), ext_hook=ext_hook)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)
    assert back.flags.aligned   # the elements start at a multiple of 8 of the ext data


def test_the_elements_are_read_in_place_from_the_bytes():
    data = ext_of(np.arange(1000, dtype=np.float64)).data
    array = unpack_array(data)
    assert array.base is data or getattr(array.base, "base", None) is data
    assert not array.flags.writeable


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"\x03<f4", "too short"),
    (b"\x03<x9\x01" + bytes(8), "numpy does not know"),
    (b"\x03|O8\x01" + (1).to_bytes(8, "little") + bytes(8), "bool, integer, float or complex"),
    (b"\x02f4\x01" + (1).to_bytes(8, "little") + bytes(6) + bytes(4), "byte order"),
    (b"\x03<f4\x02" + (3).to_bytes(8, "little"), "too short for its shape"),
    (b"\x03<f4\x01" + (3).to_bytes(8, "little") + bytes(3) + bytes(8), "needs 12 bytes"),
    (b"\x03<f4\x01" + (2 ** 62).to_bytes(8, "little") + bytes(3), "needs"),
])
def test_a_malformed_array_is_refused_with_what_is_wrong(data, message):
    with pytest.raises(ArrayFormError, match=message):
        unpack_array(data)


def test_other_ext_codes_stay_ext_values():
    assert ext_hook(5, b"abc") == msgpack.ExtType(5, b"abc")


def test_predict_receives_an_array_where_the_client_sent_one(server):
    x = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 100)
    got = send(server, {"x": ext_of(x)}).json()
    assert got == {"type": "ndarray", "dtype": "<f4", "shape": [10, 100],
                   "sum": pytest.approx(float(x.sum()), rel=1e-6), "writeable": False}


def test_plain_msgpack_clients_get_what_they_got_before(server):
    assert send(server, {"x": [1.5, 2.5]}).json() == {"type": "list"}
    assert send(server, {"x": b"raw"}).json() == {"type": "bytes"}
    assert send(server, {"x": msgpack.ExtType(5, b"other")}).json() == {"type": "ExtType"}
    answer = send(server, {"x": [1, 2], "echo": True}, accept=PACKED)
    assert answer.msgpack() == {"x": [1, 2], "double": [2, 4], "tag": "echo"}


def test_a_malformed_array_is_a_400_and_the_server_goes_on(server):
    bad = msgpack.ExtType(ARRAY_EXT, b"\x03<f4\x01" + (3).to_bytes(8, "little") + bytes(3) + bytes(4))
    answer = send(server, {"x": bad})
    assert answer.status == 400 and "needs 12 bytes" in answer.json()["error"]
    assert send(server, {"x": [1]}).status == 200


@pytest.mark.parametrize("accept", [
    "application/msgpack; arrays=ext",
    "application/json;q=0.5, application/x-msgpack;arrays=ext",
])
def test_answers_carry_arrays_as_ext_values_when_the_client_asks(server, accept):
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    answer = send(server, {"x": ext_of(x), "echo": True}, accept=accept)
    assert answer.status == 200 and answer.media_type() == PACKED
    raw = msgpack.unpackb(answer.body, ext_hook=lambda code, data: msgpack.ExtType(code, data))
    assert type(raw["double"]) is msgpack.ExtType and raw["double"].code == ARRAY_EXT
    got = msgpack.unpackb(answer.body, ext_hook=ext_hook)
    assert np.array_equal(got["double"], x * 2) and got["double"].dtype == np.int32
    assert np.array_equal(got["x"], x) and got["tag"] == "echo"


def test_without_the_parameter_answers_hold_nested_arrays(server):
    x = np.arange(4, dtype=np.float64)
    answer = send(server, {"x": ext_of(x), "echo": True}, accept=PACKED)
    assert answer.msgpack() == {"x": [0.0, 1.0, 2.0, 3.0], "double": [0.0, 2.0, 4.0, 6.0],
                                "tag": "echo"}
    assert send(server, {"x": ext_of(x), "echo": True}).json()["double"] == [0.0, 2.0, 4.0, 6.0]
