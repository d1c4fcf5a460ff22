"""Faults above the connection, over real processes and sockets: a full descriptor table,
SIGHUP, a stuck predict (``--predict-timeout``), a worker whose loop stops or that never
becomes ready, a crash loop, an upload that cannot be spooled, a hung inline predict at
SIGTERM, a worker killed with connections waiting, and the rolling reload of ``--workers``.

Every server is started in a session of its own and stopped with its process group.
Predicts that must hang wait for a file the test creates, so nothing depends on how fast
this machine is; the deadlines set here are 1–2 s.
"""

import os
import signal
import socket
import threading
import time

import pytest

from support.http_client import Connection, post_json, request
from support.predictors import raising_in
from support.servers import kill, start, wait_for_new
from support.waits import wait_until
from support.wire import received_bytes, wait_received

pytestmark = pytest.mark.slow

HANGING = """
    import os, sys, time
    import openbayes_serving as serv

    RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release")

    class Predictor:
        def predict(self, json):
            if json.get("hang"):
                print("HANG-START", file=sys.stderr, flush=True)
                while not os.path.exists(RELEASE):
                    time.sleep(0.02)
                return {"late": True}
            return {"pid": os.getpid(), "echo": json}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def release(server):
    (server.directory / "release").write_text("")


def hang_in_background(server, results, count=1):
    """Send ``count`` hanging predicts, each on its own connection and thread; their responses
    (or exceptions) land in ``results``."""
    def one():
        try:
            results.append(post_json(server, {"hang": 1}, timeout=30))
        except Exception as exc:   # the server may be stopped under it
            results.append(exc)
    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def hang_then_release(server):
    """One predict that hangs (its only slot): 504 at the deadline, then 503 for a new predict
    and for /readyz while it hangs; once released, the log says the slot is free again."""
    results = []
    hang_in_background(server, results, 1)[0].join(30)
    assert results[0].status == 504
    assert post_json(server, {"x": 1}, timeout=5).status == 503
    assert request(server, "GET", "/readyz").status == 503
    mark = len(server.lines)
    release(server)
    wait_for_new(server, mark, r"a stuck predict call returned and freed its thread")


def supervisor_pid(server):
    return int(server.wait_for(r"supervisor pid (\d+)").group(1))


def wait_ready(server, count, timeout=60):
    """Until ``count`` "ready in" lines (workers ready) are in the log."""
    wait_until(lambda: server.log.count("ready in") >= count, timeout,
               what=f"{count} 'ready in' lines; log:\n{server.log}")


FIRST_START_FAILS = """
    import os, time
    import openbayes_serving as serv
    FIRST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first")

    class Predictor:
        def __init__(self):
            try:
                os.close(os.open(FIRST, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return   # every later start works
            {first}

        def predict(self, json):
            return json

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def metric(server, series):
    """The value of one series of /metrics (name and labels as written there)."""
    text = request(server, "GET", "/metrics").body.decode()
    return int(float(text.split("\n" + series + " ")[1].split()[0]))


def answered_2xx(server):
    return metric(server, 'lite_serving_requests_total{code="2xx"}')


def worker_pids(server, mark=0):
    return [int(line.split("(pid ")[1].split(")")[0]) for line in server.lines[mark:]
            if " started (pid " in line]


# -- 1. out of file descriptors ------------------------------------------------------

def test_out_of_descriptors_pauses_accepting_instead_of_flooding_the_log(tmp_path):
    source = """
        import resource
        import openbayes_serving as serv
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))   # as `ulimit -n 64`

        class Predictor:
            def predict(self, json):
                return json

        if __name__ == "__main__":
            serv.run(Predictor)
    """
    server = start(tmp_path / "m", source)
    idle = []
    try:
        for _ in range(120):
            idle.append(socket.create_connection((server.host, server.port), timeout=10))
        mark = len(server.lines)
        server.wait_for(r"cannot accept connections: Too many open files")
        # the listening socket stays readable as long as these connections wait: a loop that
        # retried at once would log a line per attempt (tens of thousands a second)
        time.sleep(1.5)
        failures = [line for line in server.lines if "cannot accept" in line]
        assert len(failures) == 1, "".join(server.lines[mark:][:20])
        assert "pause 1" in failures[0]
        for sock in idle:
            sock.close()
        idle.clear()
        # it resumes by itself: the connections queued meanwhile and a new one are served
        assert post_json(server, {"x": 1}).json() == {"x": 1}
        server.wait_for(r"accepting connections again, after \d+ pause")
    finally:
        for sock in idle:
            sock.close()
        kill(server)


# -- 2. SIGHUP ---------------------------------------------------------------------

SLOW = """
    import os, sys, time
    import openbayes_serving as serv

    class Predictor:
        def predict(self, json):
            if json.get("sleep"):
                print("SLOW-START", file=sys.stderr, flush=True)
            time.sleep(json.get("sleep", 0))
            return {"pid": os.getpid()}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


@pytest.mark.parametrize("flags", [[], ["--api-key", "k1"], ["--workers", "2"]],
                         ids=["single", "api-key", "workers"])
def test_sighup_never_ends_the_server(serve, flags):
    server = serve(SLOW, *flags)
    headers = {"Authorization": "Bearer k1"} if "--api-key" in flags else None
    results = []
    mark = len(server.lines)
    thread = threading.Thread(target=lambda: results.append(
        post_json(server, {"sleep": 0.5}, headers=headers, timeout=20)))
    thread.start()
    wait_for_new(server, mark, "SLOW-START")   # SIGHUP while a predict runs
    target = supervisor_pid(server) if "--workers" in flags else server.proc.pid
    mark = len(server.lines)
    os.kill(target, signal.SIGHUP)
    thread.join(30)
    assert results and results[0].status == 200     # the request in flight is answered
    if "--workers" in flags:
        wait_for_new(server, mark, r"reload done")
    else:
        wait_for_new(server, mark, r"SIGHUP: nothing to reload")
    assert server.proc.poll() is None
    assert post_json(server, {}, headers=headers).status == 200


# -- 3. a stuck predict -----------------------------------------------------------------

def test_stuck_predicts_answer_504_then_fail_readiness_then_liveness_then_recover(serve):
    server = serve(HANGING, "--threads", "2", "--dispatch", "threads",
                   "--predict-timeout", "1")
    results = []
    threads = hang_in_background(server, results, 2)
    for thread in threads:
        thread.join(30)
    assert [r.status for r in results] == [504, 504]
    assert all("--predict-timeout" in r.json()["error"] for r in results)
    # every predict thread is stuck: new predicts are refused at once, not queued forever
    busy = post_json(server, {"x": 1}, timeout=5)
    assert busy.status == 503 and "--predict-timeout" in busy.json()["error"]
    assert request(server, "GET", "/readyz").status == 503
    server.wait_for(r"/healthz answers 503")
    assert request(server, "GET", "/healthz").status == 503
    assert metric(server, "lite_serving_predict_timeouts_total") == 2
    assert metric(server, "lite_serving_predicts_stuck") == 2
    mark = len(server.lines)
    release(server)
    wait_for_new(server, mark, r"a stuck predict call returned and freed its thread")
    assert request(server, "GET", "/readyz").status == 200
    assert request(server, "GET", "/healthz").status == 200
    assert post_json(server, {"x": 2}).json()["echo"] == {"x": 2}
    assert "returned, " in server.log and "its answer is dropped" in server.log


def test_one_stuck_thread_of_two_leaves_the_other_serving(serve):
    server = serve(HANGING, "--threads", "2", "--dispatch", "threads",
                   "--predict-timeout", "1")
    results = []
    hang_in_background(server, results, 1)[0].join(30)
    assert results[0].status == 504
    assert request(server, "GET", "/readyz").status == 200
    assert post_json(server, {"x": 1}).json()["echo"] == {"x": 1}
    release(server)


def test_batch_past_the_deadline_answers_504_and_refuses_the_next(serve):
    source = """
        import os, time
        import openbayes_serving as serv
        RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release")

        class Predictor:
            def predict_batch(self, json):
                if any(j.get("hang") for j in json):
                    while not os.path.exists(RELEASE):
                        time.sleep(0.02)
                return [{"echo": j} for j in json]

        if __name__ == "__main__":
            serv.run(Predictor)
    """
    server = serve(source, "--predict-timeout", "1")
    hang_then_release(server)
    assert post_json(server, {"x": 1}).json() == {"echo": {"x": 1}}


def test_async_predict_past_the_deadline_is_cancelled_and_answered_504(serve):
    source = """
        import asyncio
        import openbayes_serving as serv

        class Predictor:
            cancelled = 0

            async def predict(self, json):
                if json.get("hang"):
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        Predictor.cancelled += 1
                        raise
                return {"cancelled": Predictor.cancelled}

        if __name__ == "__main__":
            serv.run(Predictor)
    """
    server = serve(source, "--predict-timeout", "1", "--threads", "1")
    results = []
    hang_in_background(server, results, 3)
    wait_until(lambda: len(results) == 3, 30, what="three answers")
    assert [r.status for r in results] == [504, 504, 504]
    # cancelled, not stuck: the server is ready and predict runs
    assert request(server, "GET", "/readyz").status == 200
    assert post_json(server, {}).json() == {"cancelled": 3}


def test_async_predict_that_blocks_its_loop_is_answered_504_by_the_io_loop(serve):
    source = """
        import os, time
        import openbayes_serving as serv
        RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release")

        class Predictor:
            async def predict(self, json):
                if json.get("hang"):
                    while not os.path.exists(RELEASE):   # blocks the asyncio loop: no await
                        time.sleep(0.02)
                return {"ok": True}

        if __name__ == "__main__":
            serv.run(Predictor)
    """
    server = serve(source, "--predict-timeout", "1")
    hang_then_release(server)   # its asyncio loop was held: 503 and /readyz 503 meanwhile
    assert post_json(server, {}).json() == {"ok": True}


def test_stuck_worker_stops_taking_connections_and_is_replaced(serve):
    server = serve(HANGING, "--workers", "2", "--threads", "1",
                   "--dispatch", "threads", "--predict-timeout", "1")
    supervisor_pid(server)
    results = []
    hang_in_background(server, results, 1)[0].join(30)
    assert results[0].status == 504
    server.wait_for(r"every predict thread is held by a call past --predict-timeout; "
                    r"stopping it and starting a replacement")
    # the stuck worker accepts nothing: clients get answers, not 503s
    for _ in range(10):
        assert post_json(server, {"x": 1}, timeout=10).status == 200
    server.wait_for(r"worker \d started \(pid \d+\)", timeout=20)
    release(server)


# -- 4 and 9. a worker whose loop stops; a worker killed with connections waiting ----------

def test_a_wedged_worker_takes_no_connections_and_loses_none_when_killed(serve):
    server = serve(HANGING, "--workers", "2", "--dispatch", "inline",
                   "--worker-timeout", "600")
    supervisor_pid(server)
    wait_ready(server, 2)
    results = []
    hang_in_background(server, results, 1)
    server.wait_for("HANG-START")   # the hanging request holds one worker's loop (inline dispatch)
    answers = []
    conns = []
    for i in range(10):   # connections made while one worker cannot accept
        conn = Connection(server.host, server.port, 20)
        conn.request("POST", "/", {"Content-Type": "application/json"}, b'{"i": %d}' % i)
        conns.append(conn)
    for conn in conns:
        answers.append(conn.read_response().json())
        conn.close()
    pids = {a["pid"] for a in answers}
    assert len(pids) == 1                          # all answered by the worker that turns
    wedged = [p for p in worker_pids(server) if p not in pids][0]
    # more connections wait while the wedged worker is killed: none is reset
    conns = []
    for i in range(10):
        conn = Connection(server.host, server.port, 20)
        conn.request("POST", "/", {"Content-Type": "application/json"}, b'{"i": %d}' % i)
        conns.append(conn)
    os.kill(wedged, signal.SIGKILL)
    for conn in conns:
        assert conn.read_response().status == 200
        conn.close()
    server.wait_for(rf"worker \d \(pid {wedged}\) died with status -9")
    assert post_json(server, {"x": 1}).status == 200


def test_supervisor_replaces_a_worker_whose_loop_stops(serve):
    server = serve(HANGING, "--workers", "2", "--dispatch", "inline",
                   "--worker-timeout", "2")
    supervisor_pid(server)
    wait_ready(server, 2)
    mark = len(server.lines)
    results = []
    hang_in_background(server, results, 1)
    wait_for_new(server, mark, r"its I/O loop has not turned for [\d.]+ s "
                               r"\(--worker-timeout 2 s\); killing it")
    wait_for_new(server, mark, r"worker \d started \(pid \d+\)")
    assert post_json(server, {"x": 1}).status == 200


# -- 5. fork safety; a worker that never becomes ready ------------------------------------

def test_workers_start_though_a_thread_holds_the_log_lock_at_fork(serve):
    source = """
        import threading, time
        import openbayes_serving as serv
        from lite_serving.process import logs

        def busy():   # a predictor module's thread that is in lite_serving's logging most of the time
            while True:
                with logs._setup.lock:
                    time.sleep(0.01)

        threading.Thread(target=busy, daemon=True).start()

        class Predictor:
            def predict(self, json):
                return json

        if __name__ == "__main__":
            serv.run(Predictor)
    """
    server = serve(source, "--workers", "4", wait=False)
    wait_ready(server, 4)


def test_a_worker_that_never_becomes_ready_is_replaced(serve):
    source = FIRST_START_FAILS.format(first="time.sleep(3600)   # the first start hangs")
    server = serve(source, "--workers", "2", "--worker-start-timeout", "2",
                   wait=False)
    server.wait_for(r"did not become ready within --worker-start-timeout \(2 s\); "
                    r"killing it", timeout=30)
    wait_ready(server, 2)


# -- 6. a crash loop ------------------------------------------------------------------

def test_workers_that_never_start_end_the_supervisor_with_their_error(serve):
    server = serve(raising_in("__init__", "the model file is missing"), "--workers", "2",
                   wait=False)
    assert server.proc.wait(60) == 1
    server._reader.join(5)
    last = "".join(server.lines[-4:])
    assert "failed to start 5 times in a row" in last, server.log
    assert "RuntimeError: the model file is missing" in last, server.log


def test_a_worker_that_fails_once_then_works_is_restarted(serve):
    source = FIRST_START_FAILS.format(first='raise RuntimeError("first start fails")')
    server = serve(source, "--workers", "2", wait=False)
    server.wait_for(r"failed to start with status 1")
    wait_ready(server, 2)
    assert server.proc.poll() is None


# -- 7. an upload that cannot be spooled ---------------------------------------------------

def test_a_spool_that_cannot_be_created_answers_507_and_the_server_goes_on(serve):
    source = """
        import tempfile
        import openbayes_serving as serv
        tempfile.tempdir = "/nonexistent/lite-serving-spool"   # a temporary directory that is gone

        class Predictor:
            def predict(self, request):
                return {"n": len(request.files)}

        if __name__ == "__main__":
            serv.run(Predictor)
    """
    server = serve(source, "--spool-size", "1000")
    boundary = "XyZ"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"x" * 50000 + \
        f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
    since = received_bytes(server)
    with Connection(server.host, server.port, 20) as conn:
        conn.send(head)    # the head alone first: the body then arrives after it
        wait_received(server, len(head), since)
        try:
            conn.send(body)
        except OSError:    # the answer may come, and the socket close, before all is sent
            pass
        answer = conn.read_response()
    assert answer.status == 507
    assert "upload" in answer.json()["error"]
    server.wait_for(r"cannot write an upload to a temporary file: .*No such file")
    assert post_json(server, {"x": 1}).status in (200, 400)   # served on
    assert server.proc.poll() is None


# -- 8. --dispatch inline, a hung predict, SIGTERM ------------------------------------------

def test_inline_dispatch_keeps_the_graceful_deadline_with_a_hung_predict(serve):
    server = serve(HANGING, "--dispatch", "inline", "--graceful-timeout", "1")
    results = []
    hang_in_background(server, results, 1)
    server.wait_for("HANG-START")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(20) == 0
    server._reader.join(5)
    assert "stopping without waiting for it" in server.log


# -- 10. the rolling reload ----------------------------------------------------------------

VERSIONED = """
    import os
    import openbayes_serving as serv

    VERSION = {version}

    class Predictor:
        def __init__(self):
            if VERSION == "broken":
                raise RuntimeError("the new model does not load")

        def predict(self, json):
            return {{"version": VERSION, "pid": os.getpid()}}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def children(pid):
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        found |= {int(p) for p in open(f"/proc/{pid}/task/{task}/children").read().split()}
    return found


def test_a_worker_dying_during_a_reload_leaves_exactly_the_new_workers(serve):
    from support.servers import dedent
    slow = VERSIONED.format(version=2).replace(
        "def __init__(self):\n", "def __init__(self):\n            __import__('time').sleep(2)\n")
    server = serve(VERSIONED.format(version=1), "--workers", "2")
    sup = supervisor_pid(server)
    wait_ready(server, 2)
    original = worker_pids(server)
    (server.directory / "predictor.py").write_text(dedent(slow))
    mark = len(server.lines)
    os.kill(sup, signal.SIGHUP)
    wait_for_new(server, mark, r"from a new interpreter")
    os.kill(original[0], signal.SIGKILL)    # the worker being replaced dies meanwhile
    wait_for_new(server, mark, r"reload done", timeout=60)
    for pid in original[1:]:
        wait_for_new(server, mark, rf"worker \d \(pid {pid}\) exited with 0", timeout=60)
    wait_until(lambda: len(children(sup)) == 2, 10, what=f"two workers; log:\n{server.log}")
    assert {post_json(server, {}).json()["version"] for _ in range(20)} == {2}


def test_sighup_replaces_workers_one_at_a_time_without_failing_a_request(tmp_path):
    from support.servers import dedent
    server = start(tmp_path / "m", VERSIONED.format(version=1), "--workers", "2")
    predictor = server.directory / "predictor.py"
    try:
        sup = supervisor_pid(server)
        wait_ready(server, 2)
        original = worker_pids(server)
        stop = threading.Event()
        seen, failures = [], []

        def load():
            while not stop.is_set() and len(seen) < 20000:
                try:
                    answer = post_json(server, {}, timeout=20)
                    if answer.status == 200:
                        seen.append(answer.json()["version"])
                    else:
                        failures.append(answer.status)
                except OSError as exc:
                    failures.append(repr(exc))

        clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for client in clients:
            client.start()
        # a reload whose new worker cannot start leaves the old workers serving
        predictor.write_text(dedent(VERSIONED.format(version='"broken"')))
        mark = len(server.lines)
        os.kill(sup, signal.SIGHUP)
        wait_for_new(server, mark, r"the reload stops and the workers running go on serving",
                     timeout=30)
        # then a good one
        predictor.write_text(dedent(VERSIONED.format(version=2)))
        mark = len(server.lines)
        os.kill(sup, signal.SIGHUP)
        wait_for_new(server, mark, r"reload done", timeout=60)
        for pid in original:   # the old workers finish what they accepted, then exit
            wait_for_new(server, mark, rf"worker \d \(pid {pid}\) exited with 0", timeout=60)
        after = len(seen)
        wait_until(lambda: len(seen) >= after + 50, 10, what="50 answers after the reload")
        stop.set()
        for client in clients:
            client.join(30)
        assert failures == []
        assert seen[0] == 1 and set(seen[after:]) == {2}, (seen[:3], seen[after:][:3])
        assert len(seen[after:]) >= 50
        # one /metrics for the whole server, old workers' counts included: nothing went back
        wait_until(lambda: answered_2xx(server) >= len(seen), 10,
                   what="every answer counted by /metrics")
    finally:
        kill(server)
