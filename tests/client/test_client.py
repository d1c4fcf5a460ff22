"""lite_serving.client.Client against a real server: MessagePack both ways, numpy arrays, errors,
API keys, one kept-alive connection."""

import re
import socket

import msgpack
import numpy as np
import pytest

from lite_serving.client import Client, PredictError
from support.servers import kill, module_server, start, wait_for_new

SOURCE = """
    import base64

    import numpy as np

    import openbayes_serving as serv

    PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


    class Predictor:
        def predict(self, json, headers):
            kind = json.get("kind")
            if kind == "refuse":
                raise serv.ServingError("cannot do that", status_code=422, payload={"field": "x"})
            if kind == "text":
                return "plain text"
            if kind == "png":
                return PNG
            if kind == "headers":
                return {"content_type": headers.get("content-type"), "accept": headers.get("accept")}
            x = np.asarray(json["x"], dtype=np.float32)
            return {"doubled": x * 2, "shape": list(x.shape), "ints": np.arange(3, dtype=np.int64),
                    "raw": json.get("raw")}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


server = module_server("client", SOURCE)


def url(server):
    return f"http://{server.host}:{server.port}"


def test_numpy_arrays_go_and_come_back(server):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    with Client(url(server)) as client:
        answer = client.predict({"x": x, "raw": b"\x00\x01"})
    assert answer["shape"] == [3, 4]
    assert answer["doubled"] == (x * 2).tolist()   # float32 values exactly, by shape
    assert answer["ints"] == [0, 1, 2]
    assert answer["raw"] == b"\x00\x01"


def test_requests_are_messagepack(server):
    with Client(url(server)) as client:
        answer = client.predict({"kind": "headers"})
    assert answer["content_type"] == "application/msgpack"
    assert answer["accept"].startswith("application/msgpack")


def test_text_and_image_answers(server):
    with Client(url(server)) as client:
        assert client.predict({"kind": "text"}) == "plain text"
        assert client.predict({"kind": "png"}).startswith(b"\x89PNG")


def test_a_non_2xx_answer_raises_with_status_and_error(server):
    with Client(url(server)) as client:
        with pytest.raises(PredictError) as caught:
            client.predict({"kind": "refuse"})
        assert caught.value.status == 422
        assert caught.value.error == "cannot do that"
        assert caught.value.body == {"field": "x", "error": "cannot do that"}
        assert "422" in str(caught.value) and "cannot do that" in str(caught.value)
        assert client.predict({"x": [1]})["doubled"] == [2.0]   # and the client goes on


def test_one_connection_serves_every_predict(server):
    with Client(url(server) + "/?tag=reuse") as client:
        for n in range(3):
            assert client.predict({"x": [n]})["doubled"] == [2.0 * n]
    pattern = re.compile(r'127\.0\.0\.1:(\d+) - "POST /\?tag=reuse HTTP/1.1" 200')
    server.wait_for(pattern)
    while True:   # the access log writes its lines a moment after the answers
        peers = [m.group(1) for m in map(pattern.search, list(server.lines)) if m]
        if len(peers) == 3:
            break
        wait_for_new(server, len(server.lines), "access")
    assert len(set(peers)) == 1, peers


def test_a_connection_the_server_closed_while_idle_is_opened_again(tmp_path):
    srv = start(tmp_path / "idle", SOURCE, "--keep-alive-timeout", "0.2")
    try:
        with Client(url(srv)) as client:
            assert client.predict({"x": [1]})["doubled"] == [2.0]
            sock = client._conn.sock
            sock.settimeout(20)
            assert sock.recv(1, socket.MSG_PEEK) == b""   # the server closed it
            assert client.predict({"x": [2]})["doubled"] == [4.0]
    finally:
        kill(srv)


def test_api_key_is_sent(tmp_path):
    srv = start(tmp_path / "keys", SOURCE, "--api-key", "s3cret-key")
    try:
        with pytest.raises(PredictError) as caught:
            Client(url(srv)).predict({"x": [1]})
        assert caught.value.status == 401 and "API key" in caught.value.error
        with Client(url(srv), api_key="s3cret-key") as client:
            assert client.predict({"x": [1]})["doubled"] == [2.0]
    finally:
        kill(srv)


def test_bad_addresses_are_refused_at_once():
    with pytest.raises(ValueError):
        Client("ftp://example.com/")


def test_the_request_body_is_what_msgpack_makes_of_tolist():
    from lite_serving.predictor.encoder import encode_msgpack
    x = np.linspace(-1, 1, 30, dtype=np.float32).reshape(5, 6)
    assert msgpack.unpackb(encode_msgpack({"x": x})) == {"x": x.tolist()}
