"""What a start costs: the modules a server imports before its first answer, and what follows it.

Cold start is measured in ``bench/`` (timings never go into tests); these
tests hold the reasons it is short. With the compiled modules, a server whose
predictor imports nothing answers its first JSON request without having
imported orjson, logging, inspect, re or the pure-Python parser; it loads
orjson once its loop is idle, and every answer before and after is the bytes
orjson writes. lite_serving's own log lines look the same whether ``logging``
is imported or not, and an application that imports ``logging`` later can
still change them like any logger.
"""

import os
import re
import subprocess
import sys

import orjson
import pytest

from support.http_client import post, post_json
from support.servers import wait_for_new
from support.waits import wait_until

COMPILED = os.environ.get("LITE_SERVING_PURE", "") in ("", "0")
try:
    import lite_serving.codecs.json_c  # noqa: F401
    import lite_serving.http.parser_c  # noqa: F401
except ImportError:
    COMPILED = False

HEAVY = ("orjson", "logging", "inspect", "re", "lite_serving.http.parser_py", "dataclasses", "uuid",
         "traceback", "ast", "tokenize", "json", "asyncio", "lite_serving.server.async_predict",
         "lite_serving.app.openapi", "lite_serving.app.docs_page", "lite_serving.client",
         "lite_serving.testing")

REPORTER = """
    import sys
    import openbayes_serving as serv

    HEAVY = %r

    class Predictor:
        def __init__(self):
            pass

        def predict(self, json):
            return {"loaded": [name for name in HEAVY if name in sys.modules], "echo": json}

    if __name__ == "__main__":
        serv.run(Predictor)
""" % (HEAVY,)


def interpreter_imports():
    """The HEAVY modules this interpreter imports by itself (site, .pth files), lite_serving aside."""
    from support.servers import package_root
    env = dict(os.environ, PYTHONPATH=package_root())
    code = f"import sys; print(' '.join(n for n in {HEAVY!r} if n in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


DOCUMENT = {"text": "é\u2028\x00\"\\", "floats": [0.1, 1e-5, 2.5e-7, 1e16, -0.0], "ints": [2**63, -2**63],
            "nested": {"a": [True, False, None, []], "b": {}}}


@pytest.mark.skipif(not COMPILED, reason="without the compiled modules orjson and parser_py load "
                                          "with the first request")
def test_the_first_answer_needs_none_of_the_heavy_modules(serve):
    baseline = interpreter_imports()
    server = serve(REPORTER)
    first = post_json(server, DOCUMENT)
    assert first.status == 200
    body = orjson.loads(first.body)
    assert set(body["loaded"]) - baseline == set(), body["loaded"]
    # the answer written without orjson is orjson's bytes
    assert first.body == orjson.dumps({"loaded": body["loaded"], "echo": DOCUMENT})


def test_orjson_is_loaded_once_the_loop_is_idle_and_answers_do_not_change(serve):
    server = serve(REPORTER)
    before = post_json(server, DOCUMENT)
    answers = []

    def orjson_loaded():   # the loop finds itself idle within about a second
        answers.append(post_json(server, DOCUMENT))
        return "orjson" in orjson.loads(answers[-1].body)["loaded"]

    wait_until(orjson_loaded, what="orjson loaded once the loop is idle", interval=0.2)
    after = answers[-1]
    loaded = orjson.loads(after.body)["loaded"]
    assert after.status == before.status == 200
    assert after.body == orjson.dumps({"loaded": loaded, "echo": DOCUMENT})
    assert orjson.loads(before.body)["echo"] == orjson.loads(after.body)["echo"]


NOT_PLAIN = """
    import openbayes_serving as serv

    class Predictor:
        def predict(self, json):
            return {1: json, "big": 2**70 if json.get("big") else 0}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_a_first_request_that_is_not_plain_json_is_answered_by_orjson_at_once(serve):
    server = serve(NOT_PLAIN)
    answer = post(server, b'{"n": 18446744073709551616}', "application/json")
    assert answer.status == 200, answer.body
    # as orjson reads and writes it: a float past 64 bits, the non-str key as text
    assert answer.body == b'{"1":{"n":1.8446744073709552e+19},"big":0}'
    failed = post(server, b'{"big": true}', "application/json")
    assert failed.status == 500   # orjson refuses integers past 64 bits: its error, answered


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) "
                  r"lite_serving(\.\w+)*\[\d+\]: \S")

LOGS_LATER = """
    import sys
    import openbayes_serving as serv

    class Predictor:
        def predict(self, json):
            import logging
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("APP-LATER %(levelname)s %(message)s"))
            logging.getLogger("lite_serving").addHandler(handler)
            return {"logging": "logging" in sys.modules}

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_lite_serving_lines_keep_their_format_and_reach_logging_imported_later(serve):
    server = serve(LOGS_LATER)
    start_lines = [line for line in server.lines if "lite_serving" in line]
    assert start_lines and all(LINE.match(line) for line in start_lines), start_lines
    assert post_json(server, {}).status == 200
    mark = len(server.lines)
    server.stop()
    later = server.lines[mark:]
    # the shutdown lines: in lite_serving's format, and through the handler the application
    # added once it imported logging
    assert any(LINE.match(line) and "shutting down" in line for line in later), later
    assert any(line.startswith("APP-LATER INFO shutting down") for line in later), later


FAILS = """
    import openbayes_serving as serv

    class Predictor:
        def predict(self, json):
            raise RuntimeError("boom-" + str(json["n"]))

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_a_traceback_is_logged_though_nothing_had_imported_logging(serve):
    server = serve(FAILS)
    mark = len(server.lines)
    assert post_json(server, {"n": 7}).status == 500
    wait_for_new(server, mark, r"RuntimeError: boom-7")
    text = "".join(server.lines[mark:])
    assert "Traceback (most recent call last)" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR lite_serving\[\d+\]: ", text), text
    assert post_json(server, {"n": 8}).status == 500   # and it goes on serving


CONFIGURES_IN_INIT = """
    import openbayes_serving as serv

    class Predictor:
        def __init__(self):
            import logging.config
            logging.config.dictConfig({
                "version": 1, "disable_existing_loggers": False,
                "formatters": {"app": {"format": "APP-DICT %(name)s %(message)s"}},
                "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "app",
                                     "stream": "ext://sys.stderr"}},
                "loggers": {"lite_serving": {"handlers": ["err"], "level": "INFO"},
                            "lite_serving.access": {"level": "ERROR"}},
            })

        def predict(self, json):
            return json

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_logging_configured_in_init_wins_as_when_logging_was_set_up_at_start(serve):
    # lite_serving's loggers are set up in logging the moment logging is imported, so the
    # application's dictConfig replaces their handlers and levels: one line each, its format
    server = serve(CONFIGURES_IN_INIT)
    ready = [line for line in server.lines if "ready in" in line]
    assert len(ready) == 1 and ready[0].startswith("APP-DICT lite_serving ready in"), server.lines
    assert post_json(server, {"a": 1}).status == 200
    mark = len(server.lines)
    server.stop()
    later = server.lines[mark:]
    assert any(line.startswith("APP-DICT lite_serving shutting down") for line in later), later
    assert not any(LINE.match(line) for line in later), later          # not in lite's format too
    assert not any('"POST / HTTP/1.1"' in line for line in server.lines)  # access lines at ERROR


def test_a_server_busy_from_its_first_moment_loads_orjson_after_the_first_documents(serve):
    # 150 requests pipelined in one write leave the loop no idle moment: orjson is loaded
    # once json_c has read and written its share (json_codec.PLAIN_DOCUMENTS documents)
    from lite_serving.codecs.json_codec import PLAIN_DOCUMENTS
    server = serve(REPORTER)
    body = b'{"x": [1.5, 2.5]}'
    one = (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    count = PLAIN_DOCUMENTS + 50
    with server.connect() as sock:
        sock.sendall(one * count)
        received = b""
        while received.count(b"HTTP/1.1 200") < count or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received[-300:]
            received += chunk
    answers = [orjson.loads(part[part.index(b"\r\n\r\n") + 4:].split(b"HTTP/1.1")[0])
               for part in received.split(b"HTTP/1.1 200")[1:]]
    assert len(answers) == count
    assert all(answer["echo"] == {"x": [1.5, 2.5]} for answer in answers)
    assert "orjson" in answers[-1]["loaded"]
