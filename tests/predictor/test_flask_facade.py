"""The Flask facade (``predict(self, request)``) against Flask's own ``request``, attribute by attribute.

Every request is answered twice by the same ``describe(request)`` function: (a) by lite_serving,
over a real socket, from a predictor that returns it; (b) by a Flask app through
``app.test_client()``, from the view's ``flask.request``. The two dicts must be equal.

Flask's side is given the request the reference deployment (openbayes-serving: Flask under
uvicorn's WSGI interface) builds from the same bytes: the real server's address and peer
(127.0.0.1), every header field as sent with repeats joined by "," (uvicorn's WSGI environ, not
the test client's ", "), ``wsgi.url_scheme`` from X-Forwarded-Proto (uvicorn's proxy headers,
trusted from 127.0.0.1), and a chunked body handed over whole (``wsgi.input_terminated``).
"""

import gzip
import hashlib
import io
import json
import sys
import textwrap
from urllib.parse import unquote_to_bytes

import pytest

from support.http_client import Connection, chunked
from support.servers import module_server

flask = pytest.importorskip("flask")

DESCRIBE = r'''
def _plain(value):
    """JSON-able: bytes as tagged latin-1 text, tuples as lists."""
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).decode("latin-1")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _attempt(fn):
    try:
        return {"value": _plain(fn())}
    except KeyError:
        return {"raises": "KeyError"}
    except Exception as exc:
        code = getattr(exc, "code", None) or getattr(exc, "status_code", None)
        return {"raises": code if isinstance(code, int) else type(exc).__name__}


def _multidict(md, ordered=True):
    """``ordered=False``: werkzeug iterates ``values`` (a CombinedMultiDict) in set order."""
    return {
        "to_dict(flat=False)": _attempt(lambda: md.to_dict(flat=False)),
        "to_dict()": _attempt(lambda: md.to_dict()),
        "iter": _attempt(lambda: list(md) if ordered else sorted(md)),
        "items()": _attempt(lambda: list(md.items())),
        "items(multi=True)": _attempt(lambda: list(md.items(multi=True))),
        "lists()": _attempt(lambda: list(md.lists())),
        "values()": _attempt(lambda: list(md.values())),
        "len": _attempt(lambda: len(md)),
        "get(n, -1, type=int)": _attempt(lambda: md.get("n", -1, type=int)),
        "getlist(n, type=int)": _attempt(lambda: md.getlist("n", type=int)),
        "get(missing, dflt)": _attempt(lambda: md.get("missing", "dflt")),
        "get(a)": _attempt(lambda: md.get("a")),
        "getlist(a)": _attempt(lambda: md.getlist("a")),
        "[a]": _attempt(lambda: md["a"]),
        "a in": _attempt(lambda: "a" in md),
        "[missing]": _attempt(lambda: md["missing"]),
    }


def _files(request):
    out = []
    for key in request.files:
        for f in request.files.getlist(key):
            out.append({"key": key, "name": f.name, "filename": f.filename,
                        "content_type": f.content_type, "mimetype": f.mimetype,
                        "mimetype_params": dict(f.mimetype_params), "read()": f.read()})
    return out


BODY_STEPS = {
    "form": lambda r: _multidict(r.form),
    "files": _files,
    "values": lambda r: _multidict(r.values, ordered=False),
    "data": lambda r: r.data,
    "get_data()": lambda r: r.get_data(),
    "get_data(as_text=True)": lambda r: r.get_data(as_text=True),
    "json": lambda r: r.json,
    "get_json()": lambda r: r.get_json(),
    "get_json(silent=True)": lambda r: r.get_json(silent=True),
    "get_json(force=True, silent=True)": lambda r: r.get_json(force=True, silent=True),
    "stream.read()": lambda r: r.stream.read(),
    "stream.read() again": lambda r: r.stream.read(),
}

# The body may be read in different orders; each order is one a predictor may use.
ORDERS = {
    "form": ["form", "files", "values", "data", "json", "get_json(silent=True)",
             "get_json(force=True, silent=True)"],
    "data": ["get_data()", "data", "get_data(as_text=True)", "form", "files", "values", "json",
             "get_json(silent=True)", "get_json(force=True, silent=True)"],
    "silent": ["get_json(force=True, silent=True)", "get_json(silent=True)", "json", "get_json()",
               "get_data()"],
    "stream": ["stream.read()", "stream.read() again"],
}

ENVIRON_KEYS = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                "CONTENT_LENGTH", "SERVER_PROTOCOL", "REMOTE_ADDR", "wsgi.url_scheme")


def describe(request):
    r = request
    out = {}
    for name, fn in [
        ("method", lambda: r.method), ("scheme", lambda: r.scheme), ("host", lambda: r.host),
        ("path", lambda: r.path), ("full_path", lambda: r.full_path), ("url", lambda: r.url),
        ("base_url", lambda: r.base_url), ("url_root", lambda: r.url_root),
        ("query_string", lambda: r.query_string), ("remote_addr", lambda: r.remote_addr),
        ("headers", lambda: sorted([k, v] for k, v in r.headers.items())),
        ("headers.get(X-Repeat)", lambda: r.headers.get("X-Repeat")),
        ("headers[user-agent]", lambda: r.headers["user-agent"]),
        ("cookies", lambda: r.cookies.to_dict(flat=False)),
        ("cookies.get(a)", lambda: r.cookies.get("a")),
        ("is_json", lambda: r.is_json), ("mimetype", lambda: r.mimetype),
        ("mimetype_params", lambda: dict(r.mimetype_params)),
        ("content_type", lambda: r.content_type), ("content_length", lambda: r.content_length),
        ("content_encoding", lambda: r.content_encoding),
        ("environ", lambda: {k: r.environ.get(k) for k in ENVIRON_KEYS}),
        ("environ HTTP_*", lambda: sorted([k, v] for k, v in r.environ.items()
                                          if k.startswith("HTTP_"))),
        ("user_agent", lambda: str(r.user_agent)),
    ]:
        out[name] = _attempt(fn)
    out["args"] = _multidict(r.args)
    order = r.headers.get("X-Order", "form")
    out["body, in order " + order] = [[step, _attempt(lambda: BODY_STEPS[step](r))]
                                     for step in ORDERS[order]]
    return out
'''


def answered_by(source, name):
    """The function ``name`` defined in ``source``, twice: a predictor's source answering every
    request with ``name(request)``, and the function itself, for Flask's side."""
    predictor = source + f'''

import openbayes_serving as serv


class Predictor:
    def predict(self, request):
        return {name}(request)


if __name__ == "__main__":
    serv.run(Predictor)
'''
    namespace = {}
    exec(compile(source, name, "exec"), namespace)
    return predictor, namespace[name]


PREDICTOR, describe = answered_by(DESCRIBE, "describe")

UA = "Mozilla/5.0 (X11; Linux x86_64) facade-test/1.0"


def multipart(boundary, parts):
    """``parts``: [(header lines, content bytes)] → a multipart body."""
    out = b""
    for lines, content in parts:
        out += b"--" + boundary + b"\r\n" + b"".join(line + b"\r\n" for line in lines)
        out += b"\r\n" + content + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


MULTIPART = multipart(b"XyZzy42", [
    ([b'Content-Disposition: form-data; name="a"'], b"first a"),
    ([b'Content-Disposition: form-data; name="n"'], b"12"),
    ([b'Content-Disposition: form-data; name="upload"; filename="r\xc3\xa9sum\xc3\xa9.txt"',
      b"Content-Type: text/plain; charset=utf-8"], "caf\u00e9 line 1\r\nline 2".encode()),
    ([b'Content-Disposition: form-data; name="upload"; filename="pixel.png"',
      b"Content-Type: image/png"], b"\x89PNG\r\n\x1a\n\x00\x01\xff binary"),
    ([b'Content-Disposition: form-data; name="a"'], b"second a"),
    ([b'Content-Disposition: form-data; name="empty"; filename=""',
      b"Content-Type: application/octet-stream"], b""),
    ([b'Content-Disposition: form-data; name="note"', b"Content-Type: text/plain"],
     b"two\r\nlines"),
])

# name → (method, target, [(header, value)], body bytes, send chunked). Only POST / reaches
# predict (GET / is the server's own status answer), so every case is a POST.
CASES = {
    "query-no-body": ("POST", "/?a=1&a=2&b=x+y&c=%E2%9C%93&d=&flag&n=42&n=x&e=%ff&&sp=a%20b%2Bc&n=7", [
        ("User-Agent", UA), ("Accept", "application/json"), ("X-Custom", "custom value"),
        ("X-Repeat", "1"), ("X-Repeat", "2"),
        ("Cookie", 'session=abc123; theme="dark mode"; a=1; a=2; empty='),
    ], b"", False),
    "json": ("POST", "/?mode=json&a=q", [
        ("User-Agent", UA), ("Content-Type", "application/json; charset=utf-8"),
        ("X-Repeat", "only"),
    ], json.dumps({"text": "h\u00e9llo \u4e16\u754c", "n": [1, 2.5, None], "ok": True}).encode(),
        False),
    "urlencoded": ("POST", "/?src=q&a=fromquery", [
        ("User-Agent", UA), ("Content-Type", "application/x-www-form-urlencoded"),
    ], b"name=J%C3%B6rg+M&a=1&a=2&empty=&n=7&n=eight&plus=%2B", False),
    "urlencoded-charset": ("POST", "/", [
        ("User-Agent", UA), ("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8"),
    ], b"a=%E2%9C%93&b", False),
    "multipart": ("POST", "/?a=query", [
        ("User-Agent", UA), ("Content-Type", "multipart/form-data; boundary=XyZzy42"),
        ("Cookie", "a=cookie"),
    ], MULTIPART, False),
    "multipart-quoted-boundary": ("POST", "/", [
        ("User-Agent", UA), ("Content-Type", 'multipart/form-data; boundary="XyZzy42"'),
    ], MULTIPART, False),
    "text-number": ("POST", "/", [
        ("User-Agent", UA), ("Content-Type", "text/plain; charset=utf-8"),
    ], b"123", False),
    "vendor-json": ("POST", "/", [
        ("User-Agent", UA), ("Content-Type", "application/vnd.api+json"),
    ], b'{"data": {"type": "x"}}', False),
    "gzip-encoded": ("POST", "/", [
        ("User-Agent", UA), ("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
    ], gzip.compress(b'{"a": 1}', mtime=0), False),
    "chunked-https": ("POST", "/?via=chunked", [
        ("User-Agent", UA), ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"), ("X-Forwarded-Proto", "https"),
    ], b'{"chunked": [1, 2, 3]}', True),
    "octet-default-port": ("POST", "/", [
        ("Host", "example.com:80"), ("User-Agent", UA),
        ("Content-Type", "application/octet-stream"),
    ], bytes(range(256)), False),
    "https-default-port": ("POST", "/?x=1", [
        ("Host", "example.com:443"), ("X-Forwarded-Proto", "https"), ("User-Agent", UA),
    ], b"", False),
    "no-type": ("POST", "/", [("User-Agent", UA)], b"abc", False),
    "no-user-agent": ("POST", "/", [("Content-Type", "application/json")], b"[1, 2]", False),
    "bad-json": ("POST", "/", [
        ("User-Agent", UA), ("Content-Type", "application/json"),
    ], b"{bad json", False),
}


def with_host(headers, port):
    if any(n.lower() == "host" for n, _ in headers):
        return list(headers)
    return [("Host", f"127.0.0.1:{port}")] + list(headers)


def raw_request(method, target, headers, body, is_chunked):
    head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
    for name, value in headers:
        head += f"{name}: {value}\r\n".encode("latin-1")
    if is_chunked:
        return head + b"\r\n" + chunked(body[:5], body[5:])
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


def reference_environ(method, target, headers, body, is_chunked, port):
    """The WSGI environ uvicorn's WSGI interface builds for this request."""
    path, _, query = target.partition("?")
    env = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": str(port),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if is_chunked:
        env["wsgi.input_terminated"] = True
    elif body:
        headers = list(headers) + [("Content-Length", str(len(body)))]
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            key = "CONTENT_LENGTH"
        elif lower == "content-type":
            key = "CONTENT_TYPE"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        env[key] = env[key] + "," + value if key in env else value
    proto = env.get("HTTP_X_FORWARDED_PROTO")
    if proto:
        env["wsgi.url_scheme"] = proto.split(",")[0].strip()
    return env


def flask_answer(view, environ):
    """(status, the view's result) for ``environ`` through a Flask app's test client."""
    app = flask.Flask("facade_reference")
    seen = {}

    @app.route("/", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def index():
        seen["result"] = view(flask.request)
        return flask.jsonify(seen["result"])

    client = app.test_client(use_cookies=False)  # its cookie jar would replace the Cookie header
    client.environ_base = {}
    resp = client.open(flask.Request(environ))
    return resp.status_code, resp.get_json(silent=True), seen.get("result")


server = module_server("facade", PREDICTOR)


def lite_answer(server, method, target, headers, body, is_chunked):
    with Connection(server.host, server.port) as conn:
        conn.send(raw_request(method, target, headers, body, is_chunked))
        return conn.read_response(skip_interim=True)


def flattened(described):
    """One entry per attribute: the body steps and the args probes each get their own."""
    flat = {}
    for key, value in described.items():
        if key.startswith("body"):
            for step, result in value:
                if step in ("form", "values") and "value" in result:
                    for probe, probed in result["value"].items():
                        flat[f"{key}: {step}.{probe}"] = probed
                else:
                    flat[f"{key}: {step}"] = result
        elif key == "args":
            for probe, result in value.items():
                flat[f"args.{probe}"] = result
        else:
            flat[key] = value
    return flat


def shown(value):
    return json.dumps(value, ensure_ascii=False)


def normalised(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("order", ["form", "data", "silent", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_facade_matches_flask(server, case, order):
    method, target, headers, body, is_chunked = CASES[case]
    headers = with_host(headers, server.port) + [("X-Order", order)]
    lite = lite_answer(server, method, target, headers, body, is_chunked)
    assert lite.status == 200, lite
    status, _, reference = flask_answer(
        describe, reference_environ(method, target, headers, body, is_chunked, server.port))
    assert status == 200
    got, want = flattened(lite.json()), flattened(normalised(reference))
    differing = {k: {"lite": got.get(k), "flask": want.get(k)}
                 for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}
    assert not differing, "\n".join(
        f"{k}:\n  lite  {shown(v['lite'])}\n  flask {shown(v['flask'])}"
        for k, v in differing.items())


ERRORS_VIEW = '''
def errors_view(request):
    what = request.args.get("what")
    if what == "get_json":
        return {"json": request.get_json()}
    if what == "json":
        return {"json": request.json}
    if what == "arg":
        return {"value": request.args["missing"]}
    if what == "form":
        return {"value": request.form["missing"]}
    return {"nothing": True}
'''

ERRORS_PREDICTOR, errors_view = answered_by(ERRORS_VIEW, "errors_view")

errors_server = module_server("facade_errors", ERRORS_PREDICTOR)


@pytest.mark.parametrize("what, content_type, body, status", [
    ("get_json", "text/plain", b"123", 415),
    ("get_json", None, b"123", 415),
    ("json", "application/x-www-form-urlencoded", b"a=1", 415),
    ("get_json", "application/json", b"{bad", 400),
    ("json", "application/json", b"", 400),
    ("get_json", "application/json", b'{"ok": 1}', 200),
    ("arg", "application/json", b"{}", 400),
    ("form", "application/x-www-form-urlencoded", b"a=1", 400),
])
def test_request_errors_answer_like_flask(errors_server, what, content_type, body, status):
    headers = [("Host", f"127.0.0.1:{errors_server.port}")]
    if content_type:
        headers.append(("Content-Type", content_type))
    target = f"/?what={what}"
    lite = lite_answer(errors_server, "POST", target, headers, body, False)
    ref_status, _, _ = flask_answer(errors_view,
                                    reference_environ("POST", target, headers, body, False,
                                                      errors_server.port))
    assert ref_status == status
    assert lite.status == status, lite
    assert lite.media_type() == "application/json"
    if status != 200:
        assert isinstance(lite.json().get("error"), str)
    else:
        assert lite.json() == {"json": {"ok": 1}}


STREAM_LOOP = textwrap.dedent('''
    import openbayes_serving as serv


    class Predictor:
        def predict(self, request):
            total, reads = 0, 0
            for reads in range(1, 2001):   # bounded: Flask's stream ends, so must this one
                piece = request.stream.read(4096)
                if not piece:
                    break
                total += len(piece)
            return {"total": total, "reads": reads}


    if __name__ == "__main__":
        serv.run(Predictor)
''')


@pytest.mark.parametrize("spooled", [False, True], ids=["in-memory", "spooled"])
def test_reading_request_stream_in_a_loop_ends(serve, spooled):
    """``while chunk := request.stream.read(n)`` re-reads ``request.stream`` each turn: one stream."""
    server = serve(STREAM_LOOP, "--spool-size", "65536")
    body = multipart(b"loop", [([b'Content-Disposition: form-data; name="f"; filename="x.bin"'],
                                b"z" * (200000 if spooled else 20000))])
    headers = [("Host", "x"), ("Content-Type", "multipart/form-data; boundary=loop")]
    lite = lite_answer(server, "POST", "/", headers, body, False)
    assert lite.status == 200, lite
    _, reference, _ = flask_answer(lambda r: {"total": sum(
        len(p) for p in iter(lambda: r.stream.read(4096), b"")), "reads": None},
        reference_environ("POST", "/", headers, body, False, server.port))
    assert reference["total"] == len(body)
    assert lite.json()["total"] == len(body), lite.json()


BODY_READER = textwrap.dedent('''
    import hashlib

    import openbayes_serving as serv


    class Predictor:
        def predict(self, request):
            data = request.get_data()
            return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "again": request.get_data() is data}


    if __name__ == "__main__":
        serv.run(Predictor)
''')


def test_large_bodies_read_through_get_data_one_after_another(serve):
    """Bodies of a few MiB, read whole by predict, on fresh connections and on one."""
    server = serve(BODY_READER)
    bodies = [bytes([i]) * (3 * 1024 * 1024 + i) for i in range(3)]
    headers = [("Host", "x"), ("Content-Type", "application/octet-stream")]
    for body in bodies:
        resp = lite_answer(server, "POST", "/", headers, body, False)
        assert resp.status == 200, resp
        assert resp.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                               "again": True}
    with Connection(server.host, server.port) as conn:
        for body in bodies:
            conn.send(raw_request("POST", "/", headers, body, False))
        for body in bodies:
            resp = conn.read_response()
            assert resp.status == 200, resp
            assert resp.json()["sha256"] == hashlib.sha256(body).hexdigest()
