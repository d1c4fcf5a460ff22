"""``TestClient``: test a predictor with pytest through the real request path.

    from lite_serving.testing import TestClient
    from predictor import Predictor

    def test_doubles():
        with TestClient(Predictor) as client:
            r = client.post("/", json={"values": [1, 2]})
            assert r.status_code == 200
            assert r.json() == {"doubled": [2, 4]}

Entering the ``with`` builds the predictor (``__init__``, ``async def setup``)
and serves it in this process, on a free loopback port, with lite_serving's own
server on a thread of its own; each request goes over a real socket, through
the parser, the argument providers, ``predict`` and the encoder, as in
production. Flags are given as on the command line:
``TestClient(Predictor, "--api-key", "k", "--max-body-size", "1000")``. Failed
predicts answer their JSON ``error`` (``--dev`` pages are off unless asked for).
The predictor's ``run()``, if any, is not started.
"""

import http.client
import json as _json
import os
from urllib.parse import urlencode


class TestResponse:
    """An answer: ``status_code``, ``headers`` (case-insensitive), ``content``, ``text``, ``json()``."""

    __test__ = False

    def __init__(self, status_code, reason, headers, content):
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self.content = content

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def json(self):
        return _json.loads(self.content)

    def msgpack(self):
        import msgpack
        return msgpack.unpackb(self.content, raw=False)

    def __repr__(self):
        return f"<TestResponse {self.status_code}>"


class TestClient:
    """Serves ``predictor_cls`` on 127.0.0.1 while in a ``with`` block; requests go to it."""

    __test__ = False   # not a test class, whatever pytest thinks of its name

    def __init__(self, predictor_cls, *flags, timeout=60.0):
        self.predictor_cls = predictor_cls
        self.flags = list(flags)
        self.timeout = timeout
        self.base_url = None
        self._loop = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        """Build the predictor and serve it (``with`` does this)."""
        from lite_serving.app.routes import Application
        from lite_serving.predictor.loader import load_predictor
        from lite_serving.process import config as config_module
        from lite_serving.serve import IOLoop, attach_predictor, bind, load_security

        flags = ["--host", "127.0.0.1", "--port", "0"]
        if not any(flag in ("--dev", "--no-dev") or flag.startswith("--dev=")
                   for flag in self.flags):
            flags.append("--no-dev")
        config = config_module.parse_config(flags + self.flags, prog="TestClient")
        config_module.active = config
        _, keys = load_security(config)
        app = Application(config)
        attach_predictor(app, load_predictor(self.predictor_cls, config), config)
        listener = bind(config.host, config.port)
        self.base_url = "http://127.0.0.1:%d" % listener.getsockname()[1]
        self._port = listener.getsockname()[1]
        self._loop = IOLoop(app, config, listener, keys=keys)

    def close(self):
        """Stop the server: answers in flight are finished, then its threads end."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.server.request_stop()
            loop.wait()

    def request(self, method, path="/", *, json=None, content=None, data=None, files=None,
                params=None, headers=None):
        """Send one request; body from ``json`` (JSON), ``content`` (bytes or str as they are),
        ``data`` (a dict: a form) and ``files`` ({field: bytes or (filename, bytes[, type])}:
        multipart/form-data, with ``data`` as its fields)."""
        if self._loop is None:
            raise RuntimeError("the TestClient is not running: use it in a `with` block")
        sent = {}
        body = None
        if json is not None:
            body = _json.dumps(json).encode("utf-8")
            sent["Content-Type"] = "application/json"
        elif files is not None:
            body, sent["Content-Type"] = _multipart(data or {}, files)
        elif isinstance(data, dict):
            body = urlencode(data, doseq=True).encode("ascii")
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif content is not None or data is not None:
            body = content if content is not None else data
            body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        sent.update(headers or {})
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=sent)
            answer = conn.getresponse()
            return TestResponse(answer.status, answer.reason, answer.headers, answer.read())
        finally:
            conn.close()

    def get(self, path="/", **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path="/", **kwargs):
        return self.request("POST", path, **kwargs)

    def options(self, path="/", **kwargs):
        return self.request("OPTIONS", path, **kwargs)

    def head(self, path="/", **kwargs):
        return self.request("HEAD", path, **kwargs)


def _multipart(fields, files):
    """(body, content type) of a multipart/form-data body."""
    boundary = "lite-serving-" + os.urandom(12).hex()
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     .encode("utf-8") + str(value).encode("utf-8") + b"\r\n")
    for name, value in files.items():
        if isinstance(value, (bytes, bytearray)):
            filename, payload, ctype = name, bytes(value), "application/octet-stream"
        else:
            filename, payload = value[0], value[1]
            ctype = value[2] if len(value) > 2 else "application/octet-stream"
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode("utf-8")
                     + payload + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
