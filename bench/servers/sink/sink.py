"""The bound of ingest on this machine: a socket that reads each request's body and answers.

No HTTP server does less with a Content-Length body than this: it reads the head, reads the
body into one buffer that is reused (``recv_into``: the kernel's copy, nothing else), and
answers ``{"n": <length>}``. It neither checks nor decodes anything, so it is not a server to
use; ``bench/ingest.py --sink`` runs it beside the others to show how fast any server could
take the same bodies here (the copies through the loopback and wrk's own work set that pace).
A thread per connection; ``GET`` is answered at once (the harness's readiness check).

    python sink.py --port PORT
"""

import argparse
import socket
import threading


def serve(conn):
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    pending = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in pending:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            got = min(len(pending), length)
            pending = pending[got:]
            while got < length:
                if len(buf) < length - got:
                    buf = bytearray(length)
                    view = memoryview(buf)
                n = conn.recv_into(view, length - got)
                if not n:
                    return
                got += n
            body = b'{"n":%d}' % length
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    listener = socket.create_server((args.host, args.port), backlog=128)
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
