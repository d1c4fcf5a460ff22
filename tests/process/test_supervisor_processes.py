"""The --workers supervisor, over real processes: it reaps only its own workers, and its kill
deadline after SIGTERM holds whatever a worker is doing, building its predictor included."""

import json
import re
import signal

import pytest

from support.http_client import Connection, build_request, post_json
from support.servers import ready, start, stop, write_predictor
from support.waits import wait_until

pytestmark = pytest.mark.slow   # --workers supervisors, kill deadlines of seconds

# The predictor module starts a helper process of its own when it is imported, in the
# supervisor (the module runs there before the fork), and watches it from a thread.
HELPER_AT_IMPORT = """
    import os
    import subprocess
    import sys
    import threading
    import time

    import openbayes_serving as serv

    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); raise SystemExit(3)"])


    def record_helper_status():
        while helper.poll() is None:  # polls: a blocked wait() could win a race with the supervisor
            time.sleep(0.05)
        with open("helper-status.txt", "w") as f:
            f.write(str(helper.returncode))  # 0 when someone else reaped the helper


    threading.Thread(target=record_helper_status, daemon=True).start()


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            return {"pid": os.getpid()}


    if __name__ == "__main__":
        serv.run(Predictor)
"""

# __init__ that goes on whatever a signal does to it (a C call, a model loader catching
# BaseException): only SIGKILL ends it.
STUCK_INIT = """
    import sys
    import time

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            print("INIT-STUCK", file=sys.stderr, flush=True)
            while True:
                try:
                    time.sleep(0.05)
                except BaseException:
                    print("INIT-IGNORED-A-SIGNAL", file=sys.stderr, flush=True)

        def predict(self, json):
            return json


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def worker_pids(server):
    return {int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)\)", server.log)}


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_helper_process_of_the_predictor_module_is_not_the_supervisors(tmp_path):
    directory = write_predictor(tmp_path / "m", HELPER_AT_IMPORT)
    server = start(directory, None, "--workers", "2", wait=False, log_stdout=True)
    try:
        wait_until(lambda: len(re.findall(r"ready in \d+ ms", server.log)) == 2, timeout=30,
                   what="both workers ready")
        server.port = int(re.search(r"listening on http://127\.0\.0\.1:(\d+)", server.log).group(1))
        status_file = directory / "helper-status.txt"
        wait_until(status_file.exists, timeout=30, what="the helper process to end")
        # the module's own wait got the helper's status: the supervisor did not reap it
        assert status_file.read_text() == "3"
        assert server.proc.poll() is None, server.log
        assert "KeyError" not in server.log and "died with status" not in server.log, server.log
        pids = worker_pids(server)
        assert len(pids) == 2
        seen = set()
        for _ in range(200):
            seen.add(post_json(server, {}).json()["pid"])
            if seen == pids:
                break
        assert seen == pids, "both workers still serve"
        assert server.stop(signal.SIGTERM, timeout=30) == 0, server.log
        assert "all workers stopped" in server.log
    finally:
        stop(server)


def test_kill_deadline_fires_while_a_worker_is_still_in_init(tmp_path):
    directory = write_predictor(tmp_path / "m", STUCK_INIT)
    server = start(directory, None, "--workers", "2",
                    "--graceful-timeout", "1", wait=False, log_stdout=True)
    try:
        wait_until(lambda: server.log.count("INIT-STUCK") == 2, timeout=30, what="both workers in __init__")
        pids = worker_pids(server)
        assert len(pids) == 2
        server.proc.send_signal(signal.SIGTERM)
        try:
            code = server.proc.wait(60)  # the deadline is --graceful-timeout + 5 s
        except Exception:
            raise AssertionError("the supervisor was still waiting for its workers 60 s after "
                                 "SIGTERM:\n" + server.log) from None
        assert code == 0, server.log
        server.wait_for("all workers stopped")
        assert "INIT-IGNORED-A-SIGNAL" in server.log  # SIGTERM reached the workers
        for pid in pids:
            assert re.search(rf"worker \d \(pid {pid}\) did not stop within --graceful-timeout", server.log), server.log
            wait_until(lambda pid=pid: not alive(pid), timeout=10, what=f"worker {pid} gone")
    finally:
        stop(server)


def test_sigterm_while_workers_build_stops_them_promptly(tmp_path):
    source = STUCK_INIT.replace("""                except BaseException:
                    print("INIT-IGNORED-A-SIGNAL", file=sys.stderr, flush=True)""",
                                """                except Exception:
                    pass""")
    directory = write_predictor(tmp_path / "m", source)
    server = start(directory, None, "--workers", "2", wait=False, log_stdout=True)
    try:
        wait_until(lambda: server.log.count("INIT-STUCK") == 2, timeout=30, what="both workers in __init__")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0, server.log
        assert server.log.count("stopped before the predictor was ready") == 2, server.log
        assert "did not stop within" not in server.log, server.log
        assert len(re.findall(r"worker \d \(pid \d+\) exited with 0", server.log)) == 2, server.log
    finally:
        stop(server)


# The module runs first in the supervisor (workers are forked from it): at the supervisor's exit
# it reports what SIGTERM, SIGINT and SIGHUP would do to the process from then on.
EXIT_REPORT = """
    import atexit
    import os
    import signal
    import sys
    import time

    import openbayes_serving as serv

    SUPERVISOR = os.getpid()


    def report():
        if os.getpid() == SUPERVISOR:
            print("AT-EXIT", *(f"{name}={signal.getsignal(getattr(signal, name))!r}"
                               for name in ("SIGTERM", "SIGINT", "SIGHUP")), file=sys.stderr, flush=True)


    atexit.register(report)


    class Predictor:
        def predict(self, json):
            print("PREDICT-START", file=sys.stderr, flush=True)
            while not os.path.exists(json["gate"]):
                time.sleep(0.02)
            return {"pid": os.getpid()}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_signals_reaching_a_stopping_supervisor_change_nothing(tmp_path):
    """SIGTERM twice, then SIGHUP, while the workers drain; the supervisor still exits with 0.
    And once its loop has ended the three are ignored: a handler of its own still installed
    then would be reset to the default action as the interpreter finalizes, so that a SIGTERM
    arriving in its last moments would end it with -15 instead of 0."""
    directory = write_predictor(tmp_path / "m", EXIT_REPORT)
    gate = tmp_path / "gate"
    server = ready(start(directory, None, "--workers", "2", wait=False, log_stdout=True))
    try:
        wait_until(lambda: len(re.findall(r"ready in \d+ ms", server.log)) == 2, timeout=30,
                   what="both workers ready")
        with Connection(server.host, server.port) as held:
            held.send(build_request("POST", "/", {"Content-Type": "application/json"},
                                    json.dumps({"gate": str(gate)}).encode()))
            server.wait_for("PREDICT-START")
            server.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: server.log.count("shutting down: no new connections") == 2,
                       timeout=30, what="both workers told to stop")
            server.proc.send_signal(signal.SIGTERM)   # the supervisor is stopping already
            server.proc.send_signal(signal.SIGHUP)    # nor does a reload start now
            gate.touch()
            reply = held.read_response()
            assert reply.status == 200, reply
        assert server.proc.wait(60) == 0, server.log
        assert "all workers stopped" in server.log
        report = server.wait_for(r"AT-EXIT .*").group(0)
        assert report.count("SIG_IGN") == 3, report
        assert "SIGHUP: " not in server.log, server.log
    finally:
        stop(server)
