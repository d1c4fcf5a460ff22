#!/usr/bin/env python3
"""Process faults, measured on this checkout and on an earlier commit, in one run.

    python bench/process_faults.py --baseline 74da974

For each tree, with real servers on loopback:

- ``emfile``: a predictor that lowers its open-files limit to 64 (as ``ulimit -n 64``), 200
  idle client connections held for 3 s: bytes of log written and CPU seconds the server used.
- ``stuck``: ``--threads 4`` and 12 predicts that never return (``--predict-timeout 2`` where the
  tree has it): what a new POST gets within 5 s, and ``/readyz`` and ``/healthz`` after 5 s.
- ``wedged``: ``--workers 2 --dispatch inline``, one predict that never returns (its worker's
  loop is held), then 20 new requests: how many are answered within 10 s.
- ``kill9``: ``--workers 2``, 4 clients sending requests on new connections for 4 s, one worker
  killed with SIGKILL after 1.5 s: requests that failed, of all sent.

The baseline is checked out with ``git worktree`` under ``bench/.work/`` and its compiled modules
built in place; both trees run with the same interpreter. Results: a table on stdout and in
``bench/results/process_faults.md``.
"""

import argparse
import json
import os
import resource  # noqa: F401  (the emfile predictor uses it in the server)
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "results"

PREDICTOR = """
    import os, resource, time
    import openbayes_serving as serv
    if os.environ.get("BENCH_NOFILE"):
        n = int(os.environ["BENCH_NOFILE"])
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    class Predictor:
        def predict(self, json):
            if json.get("hang"):
                time.sleep(3600)
            return {"pid": os.getpid()}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def baseline_tree(rev):
    path = WORK / f"baseline-{rev}"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=path,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


class Server:
    def __init__(self, tree, flags, env=None):
        self.dir = Path(tempfile.mkdtemp(prefix="lite-faults-"))
        (self.dir / "predictor.py").write_text(textwrap.dedent(PREDICTOR))
        self.port = free_port()
        self.log_path = self.dir / "log"
        full_env = dict(os.environ, PYTHONPATH=str(tree), **(env or {}))
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lite_serving", str(self.dir), "--host", "127.0.0.1",
             "--port", str(self.port), "--no-access-log", *flags],
            cwd=self.dir, env=full_env, stdout=subprocess.DEVNULL, stderr=self.log_file,
            start_new_session=True)
        self.wait_ready(flags)

    def wait_ready(self, flags):
        need = int(flags[flags.index("--workers") + 1]) if "--workers" in flags else 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.log().count("ready in") >= need:
                return
            time.sleep(0.05)
        raise RuntimeError("server did not start:\n" + self.log())

    def log(self):
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log_file.close()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(port, obj, timeout=10.0):
    """The status of one POST on a new connection, or the name of what went wrong."""
    body = json.dumps(obj).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return "closed"
                data += chunk
            return int(data.split(b" ", 2)[1])
    except socket.timeout:
        return "no answer"
    except OSError as exc:
        return type(exc).__name__


def get(port, path, timeout=5.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" % path.encode())
            return int(sock.recv(4096).split(b" ", 2)[1])
    except socket.timeout:
        return "no answer"
    except (OSError, IndexError) as exc:
        return type(exc).__name__


def hang(port, count):
    for _ in range(count):
        threading.Thread(target=post, args=(port, {"hang": 1}, 3600), daemon=True).start()


def case_emfile(tree, _new):
    server = Server(tree, [], {"BENCH_NOFILE": "64"})
    held = []
    try:
        for _ in range(200):
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.2)
        size, cpu = server.log_path.stat().st_size, server.cpu_seconds()
        time.sleep(3.0)
        return {"log bytes in 3 s": server.log_path.stat().st_size - size,
                "server CPU s in 3 s": round(server.cpu_seconds() - cpu, 2)}
    finally:
        for sock in held:
            sock.close()
        server.stop()


def case_stuck(tree, new):
    flags = ["--threads", "4", "--dispatch", "threads"] + (["--predict-timeout", "2"] if new else [])
    server = Server(tree, flags)
    try:
        hang(server.port, 12)
        time.sleep(0.5)
        started = time.monotonic()
        status = post(server.port, {"x": 1}, timeout=5)
        waited = time.monotonic() - started
        time.sleep(max(0.0, 5 - waited))
        return {"new POST": f"{status} after {waited:.1f} s", "/readyz": get(server.port, "/readyz"),
                "/healthz": get(server.port, "/healthz")}
    finally:
        server.stop()


def case_wedged(tree, _new):
    server = Server(tree, ["--workers", "2", "--dispatch", "inline"])
    try:
        hang(server.port, 1)
        time.sleep(0.5)
        results = []
        threads = [threading.Thread(target=lambda: results.append(post(server.port, {}, 10)))
                   for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"answered of 20 in 10 s": sum(1 for r in results if r == 200)}
    finally:
        server.stop()


def case_kill9(tree, _new):
    server = Server(tree, ["--workers", "2"])
    try:
        pids = [int(line.split("(pid ")[1].split(")")[0]) for line in server.log().splitlines()
                if " started (pid " in line]
        stop_at = time.monotonic() + 4.0
        results = []

        def client():
            while time.monotonic() < stop_at:
                results.append(post(server.port, {}, 10))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        os.kill(pids[0], signal.SIGKILL)
        for thread in threads:
            thread.join()
        failed = [r for r in results if r != 200]
        return {"failed": len(failed), "sent": len(results),
                "how": ", ".join(sorted({str(r) for r in failed})) or "-"}
    finally:
        server.stop()


CASES = {"emfile": case_emfile, "stuck": case_stuck, "wedged": case_wedged, "kill9": case_kill9}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the earlier commit to compare with")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    trees = [(f"baseline {args.baseline}", baseline_tree(args.baseline), False),
             ("this checkout", ROOT, True)]
    rows = []
    for case in args.cases.split(","):
        for name, tree, new in trees:
            result = CASES[case](tree, new)
            rows.append((case, name, result))
            print(f"{case:7} {name:22} {result}", flush=True)
    lines = [f"# Process faults, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| case | tree | result |", "| --- | --- | --- |"]
    lines += [f"| {case} | {name} | " + "; ".join(f"{k}: {v}" for k, v in result.items()) + " |"
              for case, name, result in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "process_faults.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
