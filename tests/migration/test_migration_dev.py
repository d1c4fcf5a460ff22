"""Development aids: the --dev traceback page (loopback clients only, no console) and --reload."""

import os
import re
import signal
import textwrap
import time

import pytest

from support.http_client import post, post_json
from support.servers import free_port, ready, spawn, start, stop, wait_for_new, write_predictor
from support.waits import wait_until

pytestmark = pytest.mark.slow   # --reload processes restarted on edits

FAILING = """
    import openbayes_serving as serv


    def load_labels(json):
        return json["labels"]      # KeyError when the request has none


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            if json.get("html"):
                raise ValueError("<script>alert('x')</script> & more")
            return {"labels": load_labels(json)}


    if __name__ == "__main__":
        serv.run(Predictor)
"""

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def failing(tmp_path):
    servers = []

    def start_one(*flags, env=None):
        directory = write_predictor(tmp_path / f"m{len(servers)}", FAILING)
        server = start(directory, None, *flags, env=env, wait=False, log_stdout=True)
        servers.append(server)
        return ready(server)

    yield start_one
    for server in servers:
        stop(server)


def test_dev_page_is_off_unless_asked_for(failing):
    """Behind a sidecar or a queue proxy in the same pod every client is loopback: the traceback
    page is shown only with --dev (or LITE_SERVING_DEV=1), and the log says when it is on."""
    server = failing()
    answer = post_json(server, {"no": "labels"})
    assert answer.status == 500
    assert answer.json() == {"error": "predict failed: KeyError: 'labels'"}
    assert "development mode" not in server.log
    server = failing(env={"LITE_SERVING_DEV": "1"})
    server.wait_for(r"WARNING .*development mode \(--dev\): a failing predict answers clients on "
                    r"this machine with its traceback")
    assert "traceback" in post_json(server, {"no": "labels"}).json()


def test_dev_page_is_json_for_programs(failing):
    server = failing("--dev")
    answer = post_json(server, {"no": "labels"})
    assert answer.status == 500
    body = answer.json()
    assert body["error"] == "predict failed: KeyError: 'labels'"
    assert "Traceback (most recent call last)" in body["traceback"]
    assert "KeyError: 'labels'" in body["traceback"]
    frames = body["frames"]
    assert [f["function"] for f in frames] == ["predict", "load_labels"]
    assert all(f["file"].endswith("predictor.py") for f in frames)
    last = frames[-1]
    assert last["code"] == 'return json["labels"]      # KeyError when the request has none'
    assert any(n == last["line"] and last["code"] in text for n, text in last["context"])
    assert len(last["context"]) > 1  # lines around it too
    # the server goes on serving
    assert post_json(server, {"labels": [1]}).json() == {"labels": [1]}


def test_dev_page_is_html_for_browsers_escaped_and_without_scripts(failing):
    server = failing("--dev")
    answer = post(server, b'{"html": 1}', "application/json", headers={"Accept": BROWSER_ACCEPT})
    assert answer.status == 500
    assert answer.media_type() == "text/html"
    page = answer.body.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "<script" not in page.lower() and "<form" not in page.lower()
    assert "raise ValueError" in page  # the source line that raised
    assert "default-src 'none'" in answer.header("content-security-policy")


def test_dev_page_reads_accept_as_answers_do(failing):
    """The page's choice of HTML or JSON reads Accept as POST /'s answers do (predictor/encoder):
    a q outside [0, 1] makes its range unacceptable, and of two ranges equally specific the
    first counts."""
    server = failing("--dev")
    for accept in ["text/html;q=2, application/json;q=0.5", "text/html;q=-1",
                   "application/json;q=0.5, text/html;q=0.1, text/html;q=0.9"]:
        answer = post(server, b'{"html": 1}', "application/json", headers={"Accept": accept})
        assert answer.status == 500 and answer.media_type() == "application/json", accept
    answer = post(server, b'{"html": 1}', "application/json",
                  headers={"Accept": "text/html;q=1, application/json;q=0.5"})
    assert answer.media_type() == "text/html"


def test_no_dev_answers_the_usual_error(failing):
    server = failing("--no-dev")
    answer = post_json(server, {}, headers={"Accept": BROWSER_ACCEPT})
    assert answer.status == 500
    assert answer.json() == {"error": "predict failed: KeyError: 'labels'"}


def test_dev_is_never_on_in_production(failing):
    server = failing("--dev", env={"OPENBAYES_SERVING_PRODUCTION": "1"})
    server.wait_for("--dev is ignored in production")
    answer = post_json(server, {})
    assert answer.status == 500
    assert answer.json() == {"error": "predict failed; the server log has the traceback"}


def test_dev_is_off_by_default_in_notebook_containers(failing):
    server = failing(env={"OPENBAYES_JOB_URL": "http://job.example/"})
    answer = post_json(server, {})
    assert answer.status == 500 and "traceback" not in answer.json()


def test_the_page_is_only_for_loopback_clients():
    """The page's one gate; a non-loopback client would need a second machine to test over a socket."""
    from lite_serving.app.dev_page import is_loopback, render_failure

    class View:
        def __init__(self, peer):
            self.peer = peer
            self.head = type("Head", (), {"accept": None, "method": "POST", "target": "/"})()

    try:
        raise RuntimeError("secret detail")
    except RuntimeError as exc:
        error = exc
    for peer in [("10.1.2.3", 5000), ("192.168.0.9", 1), ("2001:db8::1", 9, 0, 0),
                 ("::ffff:10.0.0.1", 9, 0, 0), ("", 0), None, ("not an address", 1)]:
        assert not is_loopback(peer), peer
        assert render_failure(error, View(peer)) is None, peer
    for peer in [("127.0.0.1", 5000), ("127.8.9.10", 1), ("::1", 9, 0, 0), ("::ffff:127.0.0.1", 9, 0, 0)]:
        assert is_loopback(peer), peer
        ctype, body, _ = render_failure(error, View(peer))
        assert ctype == b"application/json" and b"secret detail" in body


# -- --reload ---------------------------------------------------------------------------------

VERSIONED = textwrap.dedent("""
    import openbayes_serving as serv
    from helper import TAG


    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            return {"version": VERSION, "tag": TAG}


    VERSION = %d

    if __name__ == "__main__":
        serv.run(Predictor)
""")


def rewrite(path, text):
    """Write ``text`` and move the modification time on, whatever the file system's clock grain."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(time.time_ns(), max(time.time_ns(), before + 1_000_000_000)))


def answer_when(server, predicate, what):
    def ask():
        try:
            answer = post_json(server, {})
        except OSError:
            return None
        return answer.status == 200 and predicate(answer.json()) and answer.json()
    return wait_until(ask, timeout=30, interval=0.1, what=what)


def serving_pid(server, mark):
    line = wait_for_new(server, mark, r"ready in \d+ ms", timeout=30)
    return int(re.search(r"lite_serving\[(\d+)\]", line).group(1))


@pytest.mark.parametrize("how", ["directory", "script"])
def test_reload_restarts_on_changes_and_survives_a_broken_edit(tmp_path, how):
    directory = write_predictor(tmp_path / "m", VERSIONED % 1, {"helper.py": 'TAG = "a"\n'})
    port = free_port()
    flags = ["--reload", "--host", "127.0.0.1", "--port", str(port)]
    if how == "directory":
        server = start(directory, None, *flags, wait=False, log_stdout=True)
    else:
        server = spawn(["predictor.py", *flags], directory, log_stdout=True)
    server.host, server.port = "127.0.0.1", port
    try:
        first = serving_pid(server, 0)
        assert first != server.proc.pid, "the server runs in a child of the reloading process"
        assert post_json(server, {}).json() == {"version": 1, "tag": "a"}

        mark = len(server.lines)
        rewrite(directory / "predictor.py", VERSIONED % 2)
        answer_when(server, lambda a: a["version"] == 2, "the new predictor.py served")
        second = serving_pid(server, mark)
        assert second != first
        wait_until(lambda: not os.path.exists(f"/proc/{first}"), timeout=30, what="the old server gone")

        mark = len(server.lines)
        rewrite(directory / "helper.py", 'TAG = "b"\n')   # a module beside predictor.py
        answer_when(server, lambda a: a["tag"] == "b", "the changed helper served")

        mark = len(server.lines)
        rewrite(directory / "predictor.py", "this is not python\n")
        wait_for_new(server, mark, r"the server exited with status 1; it starts again when a watched "
                                   r"file changes", timeout=30)
        assert server.proc.poll() is None, "the reloading process waits for the next change"
        rewrite(directory / "predictor.py", VERSIONED % 3)
        answer_when(server, lambda a: a["version"] == 3, "the fixed predictor.py served")
        last = serving_pid(server, mark)

        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.log

        wait_until(lambda: not os.path.exists(f"/proc/{last}"), timeout=30,
                   what="the server stopped with it")
    finally:
        stop(server)


def test_reload_ignores_logs_and_caches(tmp_path):
    from lite_serving.process.reloader import changed_files, snapshot
    directory = write_predictor(tmp_path / "m", VERSIONED % 1, {"helper.py": "TAG = 1\n"})
    (directory / "pkg").mkdir()
    (directory / "pkg" / "__init__.py").write_text("")
    (directory / "pkg" / "mod.py").write_text("X = 1\n")
    (directory / "data").mkdir()       # not a package: not watched
    (directory / "data" / "big.bin").write_bytes(b"0")
    before = snapshot(directory)
    assert {os.path.relpath(p, directory) for p in before} == {
        "predictor.py", "helper.py", os.path.join("pkg", "__init__.py"), os.path.join("pkg", "mod.py")}
    for name in ("server.log", ".predictor.py.swp", "notes.txt~"):
        (directory / name).write_text("x")
    (directory / "__pycache__").mkdir()
    (directory / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"x")
    (directory / "data" / "big.bin").write_bytes(b"01")
    assert changed_files(before, snapshot(directory)) == []
    rewrite(directory / "pkg" / "mod.py", "X = 2\n")
    (directory / "labels.txt").write_text("cat dog")
    assert changed_files(before, snapshot(directory)) == sorted(
        [str(directory / "labels.txt"), str(directory / "pkg" / "mod.py")])
