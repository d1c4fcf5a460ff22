"""Production behaviour of the process: --workers, graceful shutdown, probes, /metrics."""

import os
import re
import signal
import socket

import pytest

from support.servers import wait_for_exit
from support.waits import wait_until
from support.wire import Client, build, check_histogram, fetch, get, parse_metrics, post_json

pytestmark = pytest.mark.slow   # --workers, restarts, graceful shutdowns

SOURCE = """
    import json as _json
    import os
    import sys
    import time

    import openbayes_serving as serv


    def wait_for_file(name, limit=30):
        end = time.monotonic() + limit
        while not os.path.exists(name) and time.monotonic() < end:
            time.sleep(0.02)


    class Predictor:
        def __init__(self):
            if os.environ.get("TEST_INIT_GATE"):  # loading lasts until the test allows it
                print("INIT-WAITING", file=sys.stderr, flush=True)
                wait_for_file(os.environ["TEST_INIT_GATE"])

        def predict(self, json):
            if json.get("sleep"):
                print("PREDICT-START " + str(json.get("tag")), file=sys.stderr, flush=True)
                time.sleep(json["sleep"])
            if json.get("gate"):
                print("PREDICT-START " + str(json.get("tag")), file=sys.stderr, flush=True)
                wait_for_file(json["gate"])
            if json.get("raise"):
                raise RuntimeError("asked to fail")
            if json.get("refuse"):
                raise serv.ServingError("refused", status_code=422)
            return {"pid": os.getpid(), "tag": json.get("tag")}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def is_server_process(pid, server):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return str(server.directory).encode() in f.read()
    except OSError:
        return False


def ask_pid(server, tag="x"):
    reply = fetch(server, post_json(b'{"tag": "%s"}' % tag.encode()))
    assert reply.status == 200, reply
    return int(re.search(rb'"pid":(\d+)', reply.body).group(1))


# -- 1. process model -----------------------------------------------------------

def worker_pids(server):
    return {int(m.group(2)): int(m.group(1)) for m in
            re.finditer(r"worker (\d+) started \(pid (\d+)\)", server.log)}


def ready_pids(server):
    return {int(m.group(1)) for m in re.finditer(r"lite_serving\[(\d+)\]: ready in \d+ ms",
                                                  server.log)}


def test_workers_serve_restart_after_sigkill_and_stop_on_sigterm(serve):
    server = serve(SOURCE, "--workers", "2", "--threads", "1", env=None)
    try:
        check_workers(server)
    finally:  # a failed run must not leave orphaned workers behind (the fixture kills -9
        for pid in worker_pids(server):  # the supervisor only)
            if pid_alive(pid) and is_server_process(pid, server):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def check_workers(server):
    pids = wait_until(lambda: len(worker_pids(server)) == 2 and worker_pids(server),
                      what="two 'worker started' lines")
    assert server.proc.pid not in pids, "workers must be separate processes from the supervisor"
    wait_until(lambda: set(pids) <= ready_pids(server), what="both workers ready")

    # Answered, and by both workers (SO_REUSEPORT spreads fresh connections over them).
    seen = set()
    for i in range(400):
        seen.add(ask_pid(server, f"a{i}"))
        if seen == set(pids):
            break
    assert seen == set(pids), f"answers came from {seen}, workers are {set(pids)}"

    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker \d \(pid {victim}\) died with status -9")
    restarted = wait_until(lambda: set(worker_pids(server)) - set(pids),
                           what="a restarted worker").pop()
    assert pids[victim] == worker_pids(server)[restarted], "the dead worker's slot is refilled"
    wait_until(lambda: restarted in ready_pids(server), what="the new worker ready")
    survivors = {p for p in pids if p != victim} | {restarted}
    seen = set()
    for i in range(400):
        pid = ask_pid(server, f"b{i}")
        assert pid in survivors, f"answer from pid {pid}, expected one of {survivors}"
        seen.add(pid)
        if seen == survivors:
            break
    assert seen == survivors, f"after the restart answers came only from {seen}"

    # SIGTERM to the supervisor while a worker is in the middle of a predict
    inflight = Client(server)
    inflight.send(post_json(b'{"sleep": 1.5, "tag": "last"}'))
    server.wait_for("PREDICT-START last")
    server.proc.send_signal(signal.SIGTERM)
    answer = inflight.read()
    assert answer.status == 200 and b'"tag":"last"' in answer.body, answer
    inflight.close()
    # the supervisor exits by itself once its workers have drained: the test waits for that
    # (a second SIGTERM here would race the supervisor's exit)
    code = wait_for_exit(server, timeout=60)
    assert code == 0, server.log
    for pid in survivors:
        assert re.search(rf"worker \d \(pid {pid}\) exited with 0", server.log), server.log
        wait_until(lambda pid=pid: not pid_alive(pid), timeout=10, what=f"worker {pid} gone")
    assert "all workers stopped" in server.log


# -- 2. graceful shutdown -------------------------------------------------------

def refused(server):
    try:
        socket.create_connection((server.host, server.port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_in_flight_predict_refuses_new_and_closes_idle(serve):
    server = serve(SOURCE, env=None)
    idle = Client(server)
    assert idle.request(build("GET", "/")).status == 200      # an idle keep-alive connection

    busy = Client(server)
    busy.send(post_json(b'{"gate": "release-inflight", "tag": "inflight"}'))
    server.wait_for("PREDICT-START inflight")
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for("shutting down")

    # readiness, asked on the busy connection while its predict is in flight
    busy.send(build("GET", "/readyz"))

    # the idle keep-alive connection is closed by the server
    data, how = idle.read_to_close(timeout=10)
    assert (data, how) in ((b"", "eof"), (b"", "reset")), (data, how)

    # new connections are refused (the listener closes just after the log line)
    wait_until(lambda: refused(server), timeout=10, what="connections refused")

    (server.directory / "release-inflight").write_text("")  # now the predict may end
    answer = busy.read()
    assert answer.status == 200, answer
    assert b'"tag":"inflight"' in answer.body
    probe = busy.read()
    assert probe.status == 503, probe
    assert b"draining" in probe.body
    assert probe.header("connection") == "close"
    data, how = busy.read_to_close(timeout=10)
    assert data == b"" and how in ("eof", "reset"), (data, how)

    server.proc.wait(30)
    assert server.proc.returncode == 0, server.log
    server.wait_for(r"\bstopped\b")


def test_sigterm_with_a_predict_longer_than_the_graceful_timeout_still_exits(serve):
    server = serve(SOURCE, "--graceful-timeout", "1", env=None)
    c = Client(server)
    c.send(post_json(b'{"sleep": 60, "tag": "endless"}'))
    server.wait_for("PREDICT-START endless")
    server.proc.send_signal(signal.SIGTERM)
    data, how = c.read_to_close(timeout=20)
    assert how in ("eof", "reset"), f"connection still open 20 s after SIGTERM: {data[:200]!r}"
    assert not data.startswith(b"HTTP/1.1 200"), data[:200]
    try:
        server.proc.wait(20)
    except Exception:
        raise AssertionError("the server did not exit after its graceful timeout:\n" + server.log) from None
    assert server.proc.returncode == 0, (server.proc.returncode, server.log)


# -- 3. probes ------------------------------------------------------------------

def test_probes_while_loading_then_ready_with_listen_early(serve):
    server = serve(SOURCE, "--listen-early", env={"TEST_INIT_GATE": "release-init"},
                   wait=False)
    m = server.wait_for(r"listening on http://([\d.]+):(\d+)")
    server.host, server.port = m.group(1), int(m.group(2))
    server.wait_for("INIT-WAITING")

    loading = wait_until(lambda: (r := get(server, "/readyz")).status == 503 and r,
                         what="/readyz 503 while loading")
    assert b"loading" in loading.body
    assert get(server, "/v2/health/ready").status == 503
    assert get(server, "/healthz").status == 200
    assert get(server, "/v2/health/live").status == 200
    assert get(server, "/readyz", head_only=True).status == 503
    assert get(server, "/").status == 503  # GET / says 200 only when POST / would run predict
    assert get(server, "/", head_only=True).status == 503
    early = fetch(server, post_json(b'{"tag": "early"}'))
    assert early.status == 503, early
    assert early.header("retry-after") is not None
    assert "ready in" not in server.log

    (server.directory / "release-init").write_text("")  # __init__ may finish now
    server.wait_for(r"ready in \d+ ms", timeout=30)
    for path in ("/readyz", "/v2/health/ready", "/healthz", "/v2/health/live"):
        reply = get(server, path)
        assert reply.status == 200, (path, reply)
    assert b'"ready"' in get(server, "/readyz").body
    assert get(server, "/").status == 200
    assert fetch(server, post_json(b'{"tag": "late"}')).status == 200
    for path in ("/readyz", "/healthz"):
        reply = fetch(server, build("POST", path, [("Content-Type", "application/json")], b"{}"))
        assert reply.status == 405, (path, reply)


# -- 4. /metrics ----------------------------------------------------------------

def test_metrics_parse_and_count_what_happened(serve):
    server = serve(SOURCE, env=None)
    with Client(server) as c:
        first = c.request(build("GET", "/metrics"))
        before = parse_metrics(first.body.decode())
        assert first.header("content-type").startswith("text/plain; version=0.0.4")
        sent = 0
        received = len(first.raw)
        requests = ([build("GET", "/")] * 3 + [build("GET", "/nope")] * 2
                    + [post_json(b'{"tag": "ok"}'), post_json(b'{"raise": 1}'),
                       post_json(b'{"refuse": 1}')])
        statuses = []
        for data in requests:
            reply = c.request(data)
            statuses.append(reply.status)
            sent += len(data)
            received += len(reply.raw)
        assert statuses == [200, 200, 200, 404, 404, 200, 500, 422]
        # a malformed request on its own connection: answered 400, no request duration
        bad = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"
        with Client(server) as other:
            other.send(bad)
            data, how = other.read_to_close()
        assert data.startswith(b"HTTP/1.1 400 "), data
        sent += len(bad)
        received += len(data)
        last = build("GET", "/metrics")
        after_reply = c.request(last)
        sent += len(last)
        after = parse_metrics(after_reply.body.decode())

    for m in (before, after):
        assert m.types["lite_serving_requests_total"] == "counter"
        assert m.types["lite_serving_request_duration_seconds"] == "histogram"
        assert m.types["lite_serving_predict_duration_seconds"] == "histogram"
        assert m.types["lite_serving_open_connections"] == "gauge"
        # the server's figures: no per-process label to sum over (with --workers too)
        assert not any("pid" in ls for _, ls, _ in m.samples)
        for family in m.types:
            assert family in m.helps, f"{family} has no HELP"

    def delta(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    # the first /metrics answer is counted after it was rendered
    assert delta("lite_serving_requests_total", code="2xx") == 3 + 1 + 1
    assert delta("lite_serving_requests_total", code="4xx") == 2 + 1 + 1
    assert delta("lite_serving_requests_total", code="5xx") == 1
    assert delta("lite_serving_requests_total", code="1xx") == 0
    assert delta("lite_serving_requests_total", code="3xx") == 0
    count = "lite_serving_request_duration_seconds"
    assert check_histogram(after, count) - check_histogram(before, count) == 1 + 3 + 2 + 3
    predict = "lite_serving_predict_duration_seconds"
    assert check_histogram(after, predict) - check_histogram(before, predict) == 3
    assert delta("lite_serving_predict_errors_total") == 1
    assert delta("lite_serving_received_bytes_total") == sent
    assert delta("lite_serving_sent_bytes_total") == received
    assert after.value("lite_serving_requests_in_flight") == before.value(
        "lite_serving_requests_in_flight")
    # only the connection asking is open
    assert after.value("lite_serving_open_connections") == 1
