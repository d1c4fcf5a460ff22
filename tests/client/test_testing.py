"""lite_serving.testing.TestClient: a predictor served in this process, asked over real sockets."""

import asyncio
import socket

import pytest

import lite_serving as serv
from lite_serving.testing import TestClient


class Doubler:
    def __init__(self):
        self.scale = 2

    def predict(self, json, params):
        if params.get("fail") == "serving":
            raise serv.ServingError("values must be numbers", status_code=422)
        if params.get("fail") == "crash":
            raise ZeroDivisionError("crashed on purpose")
        return {"doubled": [v * self.scale for v in json["values"]]}


class Uploads:
    def predict(self, request):
        upload = request.files["file"]
        return {"name": upload.filename, "size": len(upload.read()), "label": request.form["label"]}


class Waits:
    async def setup(self):
        self.factor = 3

    async def predict(self, json):
        await asyncio.sleep(0)
        return {"tripled": json["n"] * self.factor}


def test_post_json_and_read_the_answer():
    with TestClient(Doubler) as client:
        r = client.post("/", json={"values": [1, 2.5]})
        assert r.status_code == 200
        assert r.json() == {"doubled": [2, 5.0]}
        assert r.headers["content-type"] == "application/json"
        assert r.headers["Server"] == "lite_serving"   # the real server wrote it
        assert r.content == b'{"doubled":[2,5.0]}'


def test_errors_answer_as_in_production():
    with TestClient(Doubler) as client:
        refused = client.post("/", json={"values": []}, params={"fail": "serving"})
        assert refused.status_code == 422 and refused.json() == {"error": "values must be numbers"}
        crashed = client.post("/?fail=crash", json={"values": []})
        assert crashed.status_code == 500
        assert crashed.json() == {"error": "predict failed: ZeroDivisionError: crashed on purpose"}
        assert client.post("/", content=b"{nope", headers={"Content-Type": "application/json"}
                           ).status_code == 400
        assert client.get("/healthz").json() == {"status": "alive"}


def test_flags_apply_as_on_the_command_line():
    with TestClient(Doubler, "--api-key", "k-123") as client:
        assert client.post("/", json={"values": [1]}).status_code == 401
        r = client.post("/", json={"values": [1]}, headers={"Authorization": "Bearer k-123"})
        assert r.status_code == 200


def test_uploads_reach_request_files():
    with TestClient(Uploads) as client:
        r = client.post("/", data={"label": "cat"}, files={"file": ("cat.png", b"\x89PNG" + b"x" * 96,
                                                                    "image/png")})
        assert r.status_code == 200, r.content
        assert r.json() == {"name": "cat.png", "size": 100, "label": "cat"}


def test_async_predictors_are_served_too():
    with TestClient(Waits) as client:
        assert client.post("/", json={"n": 5}).json() == {"tripled": 15}


def test_leaving_the_block_stops_the_server():
    with TestClient(Doubler) as client:
        port = int(client.base_url.rsplit(":", 1)[1])
        assert client.get("/readyz").status_code == 200
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises(RuntimeError):
        client.get("/")


def test_init_writes_a_predictor_with_an_example_and_a_test_that_passes(tmp_path):
    from support.servers import run_to_exit
    code, output = run_to_exit(["-m", "lite_serving", "init", str(tmp_path)], tmp_path)
    assert code == 0, output
    source = (tmp_path / "predictor.py").read_text()
    assert "input_example = " in source and "/docs" in source
    test_source = (tmp_path / "test_predictor.py").read_text()
    assert "from lite_serving.testing import TestClient" in test_source
    code, output = run_to_exit(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_predictor.py"],
                               tmp_path)
    assert code == 0 and "2 passed" in output, output
    # a test file of one's own stays, unless --force
    (tmp_path / "test_predictor.py").write_text("# mine\n")
    code, output = run_to_exit(["-m", "lite_serving", "init", str(tmp_path), "--force"], tmp_path)
    assert code == 0 and (tmp_path / "test_predictor.py").read_text() != "# mine\n"
    (tmp_path / "test_predictor.py").write_text("# mine\n")
    (tmp_path / "predictor.py").unlink()
    code, output = run_to_exit(["-m", "lite_serving", "init", str(tmp_path)], tmp_path)
    assert code == 0 and "left as it is" in output
    assert (tmp_path / "test_predictor.py").read_text() == "# mine\n"
