"""A stand-in for the platform's event collector (127.0.0.1:6666): what the server sends it."""

import http.server
import threading

import msgpack

from support.waits import wait_until

COLLECTOR = ("127.0.0.1", 6666)
PRODUCTION = {"OPENBAYES_SERVING_PRODUCTION": "1"}


class Collector(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.received = []  # (method, path, content type, body)
        self.lock = threading.Lock()
        super().__init__(COLLECTOR, CollectorHandler)

    def wait_for(self, count, timeout=10.0):
        def received():
            with self.lock:
                return list(self.received) if len(self.received) >= count else None
        return wait_until(received, timeout, what=f"{count} events at the collector")

    def events(self):
        with self.lock:
            return [msgpack.unpackb(body, raw=False) for _, _, _, body in self.received]


class CollectorHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.received.append((self.command, self.path,
                                         self.headers.get("Content-Type"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass
