"""A client for a lite_serving server: ``Client(url, api_key=None).predict(obj)``.

Requests go as MessagePack on one kept-alive connection (``http.client``), and
answers come back decoded: MessagePack and JSON as Python values, text as
``str``, anything else (images...) as ``bytes``. numpy arrays in a request are
written by lite_serving's tensor codec straight to MessagePack arrays (what the
server reads as nested lists, as from ``tolist()``, many times faster); arrays
in an answer arrive as the server sends them, nested lists of their values.
A non-2xx answer raises :class:`PredictError` with its status and the server's
``error``. Standard library and msgpack only; one ``Client`` per thread.

    from lite_serving.client import Client

    with Client("http://localhost:25252", api_key="...") as client:
        print(client.predict({"values": [1, 2]}))
"""

import http.client
import json
from urllib.parse import urlsplit

import msgpack

from lite_serving.predictor.encoder import encode_msgpack

MSGPACK = "application/msgpack"


class PredictError(Exception):
    """A non-2xx answer: ``status``, the server's ``error`` message, and the decoded ``body``."""

    def __init__(self, status, error, body=None):
        super().__init__(f"HTTP {status}: {error}")
        self.status = status
        self.error = error
        self.body = body


class Client:
    """Sends predict requests to ``url`` (``http://`` or ``https://``, with an optional path)."""

    def __init__(self, url, api_key=None, timeout=60.0):
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// address")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path or "/"
        if parts.query:
            self.path += "?" + parts.query
        self.timeout = timeout
        self.headers = {"Content-Type": MSGPACK, "Accept": f"{MSGPACK}, application/json;q=0.9, */*;q=0.5"}
        if api_key is not None:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._conn = None
        self._used = False   # the connection answered before: the server may have closed it since

    def predict(self, obj, headers=None):
        """``obj`` to ``POST``; the decoded answer. Raises :class:`PredictError` on a non-2xx."""
        body = encode_msgpack(obj)
        sent = dict(self.headers, **headers) if headers else self.headers
        status, content_type, data = self._exchange(body, sent)
        answer = decode_answer(content_type, data)
        if not 200 <= status < 300:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise PredictError(status, error if error is not None else answer, answer)
        return answer

    def _exchange(self, body, headers):
        """One request on the kept connection; a connection the server closed while idle is
        opened again once (the request never reached it)."""
        for attempt in (0, 1):
            conn = self._connection()
            reused = self._used
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if reused and attempt == 0:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            self._used = True
            if response.will_close:
                self.close()
            return response.status, response.getheader("Content-Type", ""), data

    def _connection(self):
        if self._conn is None:
            if self.scheme == "https":
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._used = False
        return self._conn

    def close(self):
        """Close the connection (the next predict opens another)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode_answer(content_type, data):
    """An answer body by its media type: MessagePack/JSON values, text as str, else bytes."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (MSGPACK, "application/x-msgpack", "application/vnd.msgpack"):
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    if media == "application/json" or media.endswith("+json"):
        return json.loads(data) if data else None
    if media.startswith("text/"):
        return data.decode("utf-8", "replace")
    return data
