"""Adaptive batching over real sockets: ``predict_batch`` gets the requests that wait while the
model is busy, each answer is encoded for its own request, and errors stay with their requests."""

import json
import socket
import struct
import threading

import pytest

from support.http_client import Connection, build_request, post_json, request
from support.servers import kill, launch, module_server, ready, start, wait_for_new
from support.waits import wait_until
from support.wire import fetch_metrics, open_connections, wait_in_flight

SOURCE = """
    import os
    import sys
    import time

    import openbayes_serving as serv
    from openbayes_serving.common import ServingError


    def say(text):
        os.write(2, (text + "\\n").encode())  # one write: lines of threads do not mix


    class Predictor:
        def __init__(self):
            self.calls = 0

        def predict_batch(self, json, headers):
            self.calls += 1
            tags = [body.get("tag") if isinstance(body, dict) else None for body in json]
            say("BATCH %d %s" % (self.calls, ",".join(map(str, tags))))
            gate = next((b["gate"] for b in json if isinstance(b, dict) and b.get("gate")), None)
            while gate and not os.path.exists(gate):
                time.sleep(0.01)
            if any(isinstance(b, dict) and b.get("raise") for b in json):
                kind = next(b["raise"] for b in json if b.get("raise"))
                if kind == "serving":
                    raise ServingError("the whole batch is refused", 429)
                raise RuntimeError("the batch failed")
            if any(isinstance(b, dict) and b.get("short") for b in json):
                return [{"tag": t} for t in tags][:-1]
            results = []
            for body, head in zip(json, headers):
                kind = body.get("kind") if isinstance(body, dict) else None
                if kind == "error":
                    results.append(ServingError("this one is refused", 422, {"tag": body["tag"]}))
                elif kind == "text":
                    results.append("text %s" % body["tag"])
                elif kind == "response":
                    results.append(serv.Response(b"raw", status=201, headers={"X-Tag": str(body["tag"])}))
                elif kind == "stream":
                    results.append(serv.Response(iter([b"a", b"b", str(body["tag"]).encode()])))
                elif kind == "bad":
                    results.append(object())
                else:
                    results.append({"tag": body.get("tag"), "batch": len(json),
                                    "x-id": head.get("X-Id")})
            return results


    if __name__ == "__main__":
        serv.run(Predictor)
"""

BOTH = """
    import openbayes_serving as serv


    class Predictor:
        def predict(self, json):
            return {"via": "predict", "tag": json["tag"]}

        def predict_batch(self, json):
            return [{"via": "predict_batch", "tag": b["tag"]} for b in json]


    if __name__ == "__main__":
        serv.run(Predictor)
"""


server = module_server("batch", SOURCE)


def body(**obj):
    return json.dumps(obj).encode()


def send(server, obj, headers=()):
    """Open a connection and send one request; the connection, for reading its answer later."""
    conn = Connection(server.host, server.port, timeout=30)
    conn.send(build_request("POST", "/", [("Content-Type", "application/json"), *headers],
                            json.dumps(obj).encode()))
    return conn


def batches(server, mark):
    """The batches predict_batch was given since ``mark``: lists of tags."""
    out = []
    for line in server.lines[mark:]:
        if line.startswith("BATCH "):
            out.append(line.split()[2].split(","))
    return out


def hold_the_model(server, tmp_path, name="gate"):
    """Start a batch that waits at a gate file: what arrives meanwhile forms the next batch."""
    gate = tmp_path / name
    mark = len(server.lines)
    first = send(server, {"tag": "first", "gate": str(gate)})
    wait_for_new(server, mark, r"^BATCH \d+ first$")
    return gate, first


def test_a_lone_request_runs_at_once_in_a_batch_of_one(server):
    mark = len(server.lines)
    resp = post_json(server, {"tag": "lone"})
    assert resp.status == 200 and resp.json() == {"tag": "lone", "batch": 1, "x-id": None}
    wait_for_new(server, mark, r"^BATCH \d+ lone$")
    assert batches(server, mark) == [["lone"]]


def test_requests_waiting_while_the_model_is_busy_form_one_batch(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path)
    mark = len(server.lines)
    waiting = [send(server, {"tag": f"w{i}"}) for i in range(8)]
    wait_in_flight(server, 9)
    gate.write_text("")
    assert first.read_response().json()["tag"] == "first"
    for i, conn in enumerate(waiting):
        answer = conn.read_response().json()
        assert answer["tag"] == f"w{i}" and answer["batch"] == 8, answer
    wait_for_new(server, mark, r"^BATCH \d+ w")
    assert [sorted(b) for b in batches(server, mark)] == [sorted(f"w{i}" for i in range(8))]


def test_each_answer_is_encoded_for_its_own_request(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path)
    plain = send(server, {"tag": "json"}, [("X-Id", "1")])
    packed = send(server, {"tag": "msgpack"}, [("Accept", "application/msgpack"), ("X-Id", "2")])
    cors = send(server, {"tag": "cors"}, [("Origin", "https://app.example"), ("X-Id", "3")])
    refused = send(server, {"tag": "none"}, [("Accept", "text/csv")])
    wait_in_flight(server, 5)
    gate.write_text("")
    first.read_response()
    a = plain.read_response()
    assert a.media_type() == "application/json" and a.json()["x-id"] == "1" and a.json()["tag"] == "json"
    b = packed.read_response()
    assert b.media_type() == "application/msgpack"
    assert b.msgpack() == {"tag": "msgpack", "batch": 4, "x-id": "2"}
    c = cors.read_response()
    assert c.header("access-control-allow-origin") == "https://app.example"
    assert c.json()["x-id"] == "3"
    assert refused.read_response().status == 406
    assert a.header("access-control-allow-origin") is None


def test_items_of_every_kind_and_per_item_errors(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path)
    kinds = ["plain", "error", "text", "response", "stream", "bad"]
    conns = {k: send(server, {"tag": k, "kind": k}) for k in kinds}
    wait_in_flight(server, 1 + len(kinds))
    gate.write_text("")
    first.read_response()
    got = {k: c.read_response() for k, c in conns.items()}
    assert got["plain"].status == 200 and got["plain"].json()["batch"] == len(kinds)
    assert got["error"].status == 422
    assert got["error"].json() == {"tag": "error", "error": "this one is refused"}
    assert got["text"].status == 200 and got["text"].body == b"text text"
    assert got["response"].status == 201 and got["response"].header("x-tag") == "response"
    assert got["stream"].status == 200 and got["stream"].body == b"abstream"
    assert got["bad"].status == 500 and b"cannot be sent" in got["bad"].body


@pytest.mark.parametrize("kind,status,fragment", [
    ("runtime", 500, b"RuntimeError: the batch failed"),
    ("serving", 429, b"the whole batch is refused"),
])
def test_a_raising_predict_batch_answers_every_request_of_its_batch(server, tmp_path, kind, status,
                                                                    fragment):
    gate, first = hold_the_model(server, tmp_path, f"gate-{kind}")
    conns = [send(server, {"tag": f"r{i}", "raise": kind if i == 2 else None}) for i in range(4)]
    wait_in_flight(server, 5)
    gate.write_text("")
    first.read_response()
    for conn in conns:
        answer = conn.read_response()
        assert answer.status == status and fragment in answer.body, answer
    assert post_json(server, {"tag": "after"}).json()["tag"] == "after"


def test_a_result_list_of_the_wrong_length_is_an_error_for_the_whole_batch(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path, "gate-short")
    mark = len(server.lines)
    conns = [send(server, {"tag": f"s{i}", "short": i == 0}) for i in range(3)]
    wait_in_flight(server, 4)
    gate.write_text("")
    first.read_response()
    for conn in conns:
        answer = conn.read_response()
        assert answer.status == 500 and b"2 results for a batch of 3" in answer.body, answer
    wait_for_new(server, mark, r"predict_batch returned 2 results for a batch of 3 requests")


def test_undecodable_bodies_are_400_at_once_and_never_enter_a_batch(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path, "gate-bad")
    mark = len(server.lines)
    good = send(server, {"tag": "good"})
    bad = Connection(server.host, server.port, timeout=30)
    bad.send(build_request("POST", "/", [("Content-Type", "application/json")], b"{nope"))
    packed = Connection(server.host, server.port, timeout=30)
    packed.send(build_request("POST", "/", [("Content-Type", "application/msgpack")], b"\xc1"))
    # answered while the model is still held at its gate: nothing waits for the batch
    assert bad.read_response().status == 400
    assert packed.read_response().status == 400
    gate.write_text("")
    first.read_response()
    assert good.read_response().json()["batch"] == 1
    wait_for_new(server, mark, r"^BATCH \d+ good$")
    assert batches(server, mark) == [["good"]]


def test_a_client_that_leaves_while_waiting_is_dropped_from_its_batch(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path, "gate-leave")
    mark = len(server.lines)
    leaving = send(server, {"tag": "leaving"})
    staying = send(server, {"tag": "staying"})
    wait_in_flight(server, 3)
    # a client that gives up resets its connection
    leaving.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    leaving.close()
    # the server sees the reset (and closes that connection) before the model is free
    wait_until(lambda: open_connections(server) == 2, what="the reset connection closed")
    gate.write_text("")
    first.read_response()
    assert staying.read_response().json() == {"tag": "staying", "batch": 1, "x-id": None}
    wait_for_new(server, mark, r"^BATCH \d+ staying$")
    assert batches(server, mark) == [["staying"]]
    wait_until(lambda: fetch_metrics(server).value("lite_serving_requests_in_flight") == 1,
               timeout=10, what="the dropped request no longer in flight")


def test_a_client_that_half_closes_while_waiting_is_dropped_from_its_batch(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path, "gate-eof")
    mark = len(server.lines)
    leaving = [send(server, {"tag": f"eof{i}"}) for i in range(4)]
    staying = send(server, {"tag": "stays"})
    wait_in_flight(server, 6)
    for conn in leaving:
        conn.sock.shutdown(socket.SHUT_WR)   # sent its request, then end-of-file
    # the server reads the end-of-file before the model is free. Nothing it counts changes
    # then; but each end-of-file is in its socket once shutdown() returns (loopback), so the
    # turn of the loop that answers a scrape made after them has read them
    fetch_metrics(server)
    gate.write_text("")
    first.read_response()
    assert staying.read_response().json() == {"tag": "stays", "batch": 1, "x-id": None}
    for conn in leaving:
        assert conn.sock.recv(100) == b""   # closed without an answer
    wait_for_new(server, mark, r"^BATCH \d+ stays$")
    assert batches(server, mark) == [["stays"]]
    wait_until(lambda: fetch_metrics(server).value("lite_serving_requests_in_flight") == 1,
               timeout=10, what="the dropped requests no longer in flight")


def test_metrics_count_batch_sizes_and_waits(server):
    metrics = fetch_metrics(server)
    assert metrics.value("lite_serving_batch_size_count") >= 1
    assert metrics.value("lite_serving_batch_size_sum") >= metrics.value("lite_serving_batch_size_count")
    assert metrics.value("lite_serving_batch_wait_seconds_count") >= 1


def test_the_start_up_log_says_how_predict_is_batched(server):
    assert "predict_batch gets up to 32 requests a call" in server.log
    assert "no added wait" in server.log


def test_max_batch_size_caps_the_batches(tmp_path):
    srv = start(tmp_path / "cap", SOURCE, "--max-batch-size", "3")
    try:
        gate, first = hold_the_model(srv, tmp_path)
        mark = len(srv.lines)
        conns = [send(srv, {"tag": f"c{i}"}) for i in range(7)]
        wait_in_flight(srv, 8)
        gate.write_text("")
        first.read_response()
        for conn in conns:
            assert conn.read_response().status == 200
        wait_until(lambda: sum(len(b) for b in batches(srv, mark)) == 7, timeout=10,
                   what="every request's batch in the log")
        sizes = [len(b) for b in batches(srv, mark)]
        assert sum(sizes) == 7 and max(sizes) <= 3, sizes
    finally:
        kill(srv)


def test_max_batch_delay_waits_for_a_fuller_batch(tmp_path):
    srv = start(tmp_path / "delay", SOURCE, "--max-batch-delay", "1500")
    try:
        mark = len(srv.lines)
        a = send(srv, {"tag": "early"})
        wait_in_flight(srv, 1)   # the model is idle, but the batch waits up to 1.5 s for more
        b = send(srv, {"tag": "late"})
        assert a.read_response().json()["batch"] == 2
        assert b.read_response().json()["batch"] == 2
        wait_for_new(srv, mark, r"^BATCH \d+ early,late$")
        assert batches(srv, mark) == [["early", "late"]]
        assert "waiting up to 1500 ms for a fuller batch" in srv.log
    finally:
        kill(srv)


def test_batch_size_one_uses_predict_when_the_class_has_it(tmp_path):
    srv = start(tmp_path / "one", BOTH, "--max-batch-size", "1")
    try:
        assert post_json(srv, {"tag": 1}).json() == {"via": "predict", "tag": 1}
        assert "predict_batch gets up to" not in srv.log
    finally:
        kill(srv)
    srv = start(tmp_path / "many", BOTH)
    try:
        assert post_json(srv, {"tag": 2}).json() == {"via": "predict_batch", "tag": 2}
    finally:
        kill(srv)


def test_other_routes_answer_while_a_batch_runs(server, tmp_path):
    gate, first = hold_the_model(server, tmp_path, "gate-routes")
    assert request(server, "GET", "/healthz").status == 200
    assert request(server, "GET", "/").status == 200
    gate.write_text("")
    assert first.read_response().status == 200



WHERE = """
    import os
    import threading
    import time

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            self.lock = threading.Lock()
            self.active = 0
            self.most = 0          # most batches ever running at once

        def predict_batch(self, json):
            with self.lock:
                self.active += 1
                self.most = max(self.most, self.active)
            try:
                for body in json:
                    while body.get("gate") and not os.path.exists(body["gate"]):
                        time.sleep(0.01)
                time.sleep(max(body.get("sleep", 0) for body in json))
            finally:
                with self.lock:
                    self.active -= 1
            name = threading.current_thread().name
            return [{"thread": name, "most": self.most, "batch": len(json)} for _ in json]


    if __name__ == "__main__":
        serv.run(Predictor)
"""

BATCH_THREAD = "lite_serving-batch"


def thread_of(srv, **obj):
    answer = post_json(srv, obj)
    assert answer.status == 200, answer.body
    return answer.json()["thread"]


def runs_off_the_batch_thread_soon(srv, tries=50, **obj):
    """Send lone requests until one runs off the batch thread (a lone batch runs there once the
    batch of one before it took under 2 ms: on a busy machine a call may take longer now and
    then, so this retries instead of expecting it of every request)."""
    return any(thread_of(srv, **obj) != BATCH_THREAD for _ in range(tries))


def test_a_lone_short_batch_runs_on_the_io_thread_and_a_longer_one_on_the_batch_thread(tmp_path):
    srv = start(tmp_path / "where", WHERE, "--log-level", "debug")  # the full description
    try:
        # the first lone request has no measured call yet: the batch thread runs it
        assert thread_of(srv) == BATCH_THREAD
        # its call was short: lone requests now run where predict would, with no hand-off
        assert runs_off_the_batch_thread_soon(srv)
        # a call over 2 ms, given to the I/O thread after a short one, sends the next lone
        # request back to the batch thread
        for _ in range(20):
            runs_off_the_batch_thread_soon(srv)
            if thread_of(srv, sleep=0.05) != BATCH_THREAD:
                break
        else:
            pytest.fail("a lone request after a short batch never ran off the batch thread")
        assert thread_of(srv) == BATCH_THREAD
        assert runs_off_the_batch_thread_soon(srv)
        assert "a lone request whose call takes under 2 ms runs on the I/O thread" in srv.log
    finally:
        kill(srv)


@pytest.mark.parametrize("flags", [("--dispatch", "threads"), ("--max-batch-delay", "1")])
def test_every_batch_runs_on_the_batch_thread_when_asked(tmp_path, flags):
    srv = start(tmp_path / "thread", WHERE, *flags)
    try:
        assert {thread_of(srv) for _ in range(6)} == {BATCH_THREAD}
        assert "a lone request whose call takes under" not in srv.log
    finally:
        kill(srv)


def test_a_lone_batch_that_turns_slow_on_the_io_thread_holds_nothing_else(tmp_path):
    srv = start(tmp_path / "slow", WHERE)
    try:
        thread_of(srv)
        assert runs_off_the_batch_thread_soon(srv)  # lone requests now run on the I/O thread
        gate = tmp_path / "gate"
        stuck = send(srv, {"gate": str(gate)})
        # the I/O thread is inside predict_batch: the loop goes on without it
        assert request(srv, "GET", "/healthz").status == 200
        others = []
        for i in range(4):  # apart, so that each one arrives alone in its own turn of the loop
            others.append(send(srv, {"tag": i}))
            wait_in_flight(srv, 2 + i)
        for conn in others:  # they wait for the model: one batch at a time
            conn.sock.settimeout(0.05)
            with pytest.raises(socket.timeout):
                conn.sock.recv(1)
            conn.sock.settimeout(30)
        gate.write_text("")
        assert stuck.read_response().json()["batch"] == 1
        answers = [conn.read_response().json() for conn in others]
        assert {a["thread"] for a in answers} == {BATCH_THREAD}
        assert max(a["most"] for a in answers) == 1
        assert sum(a["batch"] for a in answers) >= 4 and max(a["batch"] for a in answers) > 1
    finally:
        kill(srv)

# -- the ONNX model: zero-code serving and /v2 batch by themselves ------------------------------

np = pytest.importorskip("numpy")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def write_model(path, dynamic=True):
    """Y = X @ W + B with a dynamic (or fixed) first dimension; Z = sum of X's rows' squares.

    onnxruntime computes Y's rows the same whatever the batch (so batched answers are equal
    bit for bit), but its ReduceSum rounds Z by the whole tensor's shape (1 ulp apart).
    """
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B")
    first = "batch" if dynamic else 2
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"]),
         helper.make_node("Mul", ["X", "X"], ["XX"]),
         helper.make_node("ReduceSum", ["XX", "axes"], ["Z"], keepdims=0)],
        "affine",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [first, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [first, 3]),
         helper.make_tensor_value_info("Z", TensorProto.FLOAT, [first])],
        [w, b, numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return ort.InferenceSession(path)


@pytest.fixture(scope="module")
def zero_code(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zero")
    session = write_model(str(directory / "affine.onnx"))
    # a batch waits 300 ms for more requests after its first: the concurrent requests of a test
    # meet in a batch however slowly a loaded machine starts their threads
    srv = start_dir(directory, "--threads", "4", "--max-batch-delay", "300")
    yield srv, session
    kill(srv)


def start_dir(directory, *flags):
    """Serve a directory as it is (no predictor.py written)."""
    srv = launch(directory, "--host", "127.0.0.1", "--port", "0", *flags)
    return ready(srv)


def concurrently(fn, args):
    out = [None] * len(args)

    def run(i):
        out[i] = fn(*args[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def raw_post(server, path, obj):
    with Connection(server.host, server.port, timeout=30) as conn:
        conn.send(build_request("POST", path, [("Content-Type", "application/json")],
                                json.dumps(obj).encode()))
        return conn.read_response()


def test_zero_code_requests_run_together_and_answer_as_alone(zero_code):
    srv, session = zero_code
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((n, 5)).astype(np.float32) for n in (1, 3, 2, 1, 4, 2) * 4]
    before = fetch_metrics(srv)
    answers = concurrently(lambda x: raw_post(srv, "/", {"inputs": {"X": x.tolist()}}),
                           [(x,) for x in inputs])
    after = fetch_metrics(srv)
    for x, answer in zip(inputs, answers):
        assert answer.status == 200, answer
        y, z = session.run(["Y", "Z"], {"X": x})
        got = answer.json()["outputs"]
        assert np.array(got["Y"], dtype=np.float32).tobytes() == y.tobytes()   # bit for bit
        # onnxruntime's ReduceSum rounds by the whole tensor's shape: the last bit may differ
        np.testing.assert_allclose(np.array(got["Z"], dtype=np.float32), z, rtol=1e-6)
    calls = after.value("lite_serving_batch_size_count") - before.value("lite_serving_batch_size_count")
    assert 1 <= calls < len(inputs), "concurrent requests were never run together"


def test_v2_requests_of_other_shapes_and_outputs_go_to_other_batches(zero_code):
    srv, session = zero_code
    rng = np.random.default_rng(2)
    requests = []
    for i in range(24):
        x = rng.standard_normal((1 + i % 3, 5)).astype(np.float32)
        outputs = [{"name": "Y"}] if i % 4 == 0 else None
        req = {"id": f"r{i}", "inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32",
                                          "data": x.ravel().tolist()}]}
        if outputs:
            req["outputs"] = outputs
        requests.append((x, req))
    bad = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    answers = concurrently(lambda r: raw_post(srv, "/v2/models/affine/infer", r),
                           [(r,) for _, r in requests] + [(bad,)])
    assert answers[-1].status == 400 and b"'X'" in answers[-1].body
    for (x, req), answer in zip(requests, answers):
        assert answer.status == 200, answer
        got = answer.json()
        assert got["id"] == req["id"]
        outs = {o["name"]: o for o in got["outputs"]}
        y, z = session.run(["Y", "Z"], {"X": x})
        assert outs["Y"]["shape"] == list(y.shape)
        assert np.array(outs["Y"]["data"], dtype=np.float32).tobytes() == y.ravel().tobytes()
        if "outputs" in req:
            assert set(outs) == {"Y"}
        else:
            np.testing.assert_allclose(np.array(outs["Z"]["data"], dtype=np.float32), z, rtol=1e-6)


def test_a_model_with_a_fixed_first_dimension_is_not_batched(tmp_path):
    session = write_model(str(tmp_path / "fixed.onnx"), dynamic=False)
    srv = start_dir(tmp_path)
    try:
        x = np.arange(10, dtype=np.float32).reshape(2, 5)
        answers = concurrently(lambda: raw_post(srv, "/", {"inputs": {"X": x.tolist()}}), [()] * 6)
        y, _ = session.run(["Y", "Z"], {"X": x})
        for answer in answers:
            assert np.array(answer.json()["outputs"]["Y"], dtype=np.float32).tobytes() == y.tobytes()
        assert "the model's first dimension is fixed" in srv.log
        assert "lite_serving_batch_size" not in request(srv, "GET", "/metrics").text()
    finally:
        kill(srv)
