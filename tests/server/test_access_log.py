"""Where the access log's lines go: JSON lines as UTF-8 bytes to the binary stream under a UTF-8
text stream (after the text written to it before), as text to any other; and a server's JSON
lines, whatever its clients and its predictor put in them. (The lines' text: see
test_access_lines.py, which also runs under emulation and sanitizers, so starts no server.)"""

import io
import json

import pytest

from lite_serving.http import parser_py
from lite_serving.server import access_log
from support.http_client import post_json
from support.servers import wait_for_new


def record(agent, reason=None):
    head = parser_py.parse_head(
        b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: " + agent.encode("latin-1") + b"\r\n\r\n", 0)
    return ("127.0.0.1:5000", head, 200, 0.001, reason, 3)


def batch(log, stream, records, as_json=True):
    log.stream, log.binary, log.json = stream, access_log.utf8_buffer(stream), as_json
    log.lines = list(records)
    log.flush()


def test_json_lines_go_to_the_bytes_under_a_utf8_stream_after_its_text():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace")
    assert access_log.utf8_buffer(stream) is raw
    stream.write("before, without its newline yet: ")   # held by the text layer
    batch(access_log.AccessLog(), stream, [record("caf\xe9", "r\udcff")] * 2)
    written = raw.getvalue()
    assert written.startswith(b"before, without its newline yet: {\"time\":")
    lines = written.split(b": ", 1)[1].splitlines()
    assert [json.loads(line)["user_agent"] for line in lines] == ["caf\xe9"] * 2
    assert [json.loads(line)["reason"] for line in lines] == ["r\udcff"] * 2


def test_text_lines_go_to_the_bytes_under_a_utf8_stream_as_it_would_write_them():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace")
    stream.write("before: ")
    batch(access_log.AccessLog(), stream, [record("caf\xe9", "r\udcff")] * 2, as_json=False)
    lines = raw.getvalue().splitlines()
    assert lines[0].startswith(b"before: ") and len(lines) == 2
    for line in lines:
        assert line.endswith(' "caf\xe9" -- r\\udcff'.encode())
        assert b" INFO lite_serving.access[" in line


@pytest.mark.parametrize("stream", [
    lambda: io.TextIOWrapper(io.BytesIO(), encoding="latin-1"),     # not UTF-8
    lambda: io.StringIO(),                                          # no bytes under it
])
def test_lines_to_other_streams_go_as_text(stream):
    stream = stream()
    assert access_log.utf8_buffer(stream) is None
    log = access_log.AccessLog()
    batch(log, stream, [record("caf\xe9")])
    batch(log, stream, [record("caf\xe9")], as_json=False)
    text = stream.getvalue() if isinstance(stream, io.StringIO) else \
        stream.buffer.getvalue().decode("latin-1")
    as_json, as_text = text.splitlines()
    assert json.loads(as_json)["user_agent"] == "caf\xe9"
    assert as_text.endswith(' "caf\xe9"')


SURROGATE = """
    import openbayes_serving as serv

    class Predictor:
        def predict(self, json):
            if json.get("bad"):
                name = b"name\\xff".decode("utf-8", "surrogateescape")
                raise serv.ServingError("no file " + name)
            return json

    if __name__ == "__main__":
        serv.run(Predictor)
"""


def test_json_access_lines_of_a_server(serve):
    """Non-ASCII and escaped user agents, and a reason holding a surrogate: the server keeps
    serving, and every line is one JSON object with the fields as sent."""
    server = serve(SURROGATE, "--log-format", "json")
    agent = 'caf\xe9 "quoted" \\ back\tslash'
    answer = post_json(server, {"x": 1}, headers={"User-Agent": agent, "X-Request-Id": "r1"})
    assert answer.status == 200
    post_json(server, {"bad": 1}, headers={"X-Request-Id": "r2"})
    assert post_json(server, {"x": 2}, headers={"X-Request-Id": "r3"}).status == 200
    wait_for_new(server, 0, r'"request_id":"r3"')
    access = [json.loads(line) for line in server.lines if '"lite_serving.access"' in line]
    ok = next(o for o in access if o["request_id"] == "r1")
    assert ok["user_agent"] == agent and ok["message"] == "POST / 200"
    bad = next(o for o in access if o["request_id"] == "r2")
    assert "no file name\udcff" in bad["reason"]


def test_text_access_lines_of_a_server(serve):
    """The same in text: the user agent's quotes escaped, the surrogate as its backslash escape
    (as stderr writes one)."""
    server = serve(SURROGATE)
    agent = 'caf\xe9 "q"'
    answer = post_json(server, {"x": 1}, headers={"User-Agent": agent, "X-Request-Id": "r1"})
    assert answer.status == 200
    post_json(server, {"bad": 1}, headers={"X-Request-Id": "r2"})
    assert post_json(server, {"x": 2}, headers={"X-Request-Id": "r3"}).status == 200
    ok = server.wait_for(r'"POST / HTTP/1.1" 200 .* r1 "(.*)"$')
    assert ok.group(1) == 'caf\xe9 \\"q\\"'
    assert server.wait_for(r" r2 .* -- (.*)$").group(1).endswith("no file name\\udcff")
    server.wait_for(r" r3 ")
