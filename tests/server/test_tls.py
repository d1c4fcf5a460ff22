"""HTTPS: real TLS connections to real servers, certificates made at test time with trustme.

Handshake, keep-alive and pipelining; large, chunked and spooled uploads; streamed and large
answers; client certificates; stalled handshakes; plain HTTP on the TLS port; ``--workers``;
graceful drain; certificate reload on SIGHUP; start-up errors naming the file at fault;
tritonclient over HTTPS on the v2 routes.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import threading
import time
import warnings

import pytest

from support.http_client import Connection, ConnectionClosed, build_request
from support.servers import (
    LISTENING,
    ready,
    serve_to_exit,
    start,
    stop,
    wait_for_exit,
    wait_for_new,
    write_predictor,
)
from support.tls import Pki, TLSConnection, tls_request
from support.waits import wait_until

trustme = pytest.importorskip("trustme")

SOURCE = r'''
import hashlib
import os
import sys
import time

import lite_serving as serv


def pieces(count, size):
    for i in range(count):
        yield bytes([65 + i % 26]) * size


def pattern(size):
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class Predictor:
    def predict(self, data, headers, request):
        op = headers.get("x-op", "echo")
        if op == "digest":
            return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if op == "file":
            content = request.files["upload"].read()
            return {"length": len(content), "sha256": hashlib.sha256(content).hexdigest()}
        if op == "stream":
            return serv.Response(pieces(int(headers["x-pieces"]), int(headers["x-size"])),
                                 mimetype="application/octet-stream")
        if op == "big":
            return serv.Response(pattern(int(headers["x-size"])),
                                 mimetype="application/octet-stream")
        if op == "gate":
            sys.stderr.write("PREDICT-START\n")
            sys.stderr.flush()
            deadline = time.monotonic() + 30
            while not os.path.exists("release") and time.monotonic() < deadline:
                time.sleep(0.01)
            return {"released": os.path.exists("release")}
        if op == "pid":
            return {"pid": os.getpid()}
        return {"echo": data.decode("utf-8")}


if __name__ == "__main__":
    serv.run(Predictor)
'''

JSON = {"Content-Type": "application/json"}


def pieces(count, size):
    return b"".join(bytes([65 + i % 26]) * size for i in range(count))


def pattern(size):
    return (bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, pki):
    running = start(tmp_path_factory.mktemp("tls"), SOURCE, *pki.flags(), "--head-timeout", "2")
    yield running
    stop(running)


@pytest.fixture
def servers(tmp_path):
    """Servers started by one test, ended with their whole session at its end."""
    started = []

    def run(source, *flags, **kw):
        running = start(tmp_path / f"model{len(started)}", source, *flags, **kw)
        started.append(running)
        return running

    yield run
    for running in started:
        stop(running)


def https(server, context, timeout=30):
    return http.client.HTTPSConnection(server.host, server.port, context=context, timeout=timeout)


# -- handshake, keep-alive, pipelining ---------------------------------------------------------

def test_handshake_then_keep_alive_on_one_connection(server, pki):
    with TLSConnection(server.host, server.port, pki.client_context()) as conn:
        assert conn.sock.getpeercert(binary_form=True) == pki.server_der
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        for i in range(3):
            conn.request("POST", "/", JSON, b'{"n": %d}' % i)
            reply = conn.read_response()
            assert reply.status == 200, reply
            assert reply.json() == {"echo": '{"n": %d}' % i}
        conn.request("GET", "/healthz")
        assert conn.read_response().json() == {"status": "alive"}


def test_tls_1_2_is_served_and_older_versions_are_refused(server, pki):
    context = pki.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with TLSConnection(server.host, server.port, context) as conn:
        assert conn.sock.version() == "TLSv1.2"
        conn.request("GET", "/")
        assert conn.read_response().status == 200

    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match="(?i)protocol version"):  # the server's alert
        TLSConnection(server.host, server.port, old).close()


def test_pipelined_requests_in_one_record_are_answered_in_order(server, pki):
    with TLSConnection(server.host, server.port, pki.client_context()) as conn:
        conn.send(b"".join(build_request("POST", "/", JSON, b'{"i": %d}' % i) for i in range(5)))
        replies = conn.read_responses(5)
    assert [r.json() for r in replies] == [{"echo": '{"i": %d}' % i} for i in range(5)]


def test_end_of_a_body_and_the_next_request_in_one_record(server, pki):
    """The record holding the end of a body also holds the next request: the bytes left in the
    SSL layer after the body is read must be read without waiting for the socket."""
    with TLSConnection(server.host, server.port, pki.client_context()) as conn:
        body = b'{"x": "' + b"y" * 3000 + b'"}'
        conn.request("POST", "/", {**JSON, "Expect": "100-continue",
                                    "Content-Length": str(len(body))})
        assert conn.read_response().status == 100  # the server now waits in the body
        conn.send(body + build_request("POST", "/", JSON, b'{"second": true}'))
        first, second = conn.read_responses(2)
    assert first.status == 200 and first.json() == {"echo": body.decode()}
    assert second.json() == {"echo": '{"second": true}'}


# -- bodies in and out --------------------------------------------------------------------------

def test_50_mb_upload(server, pki):
    payload = os.urandom(50 * 1024 * 1024)
    conn = https(server, pki.client_context())
    try:
        conn.request("POST", "/", body=payload,
                     headers={"X-Op": "digest", "Content-Type": "application/octet-stream"})
        reply = conn.getresponse()
        assert reply.status == 200
        assert json.loads(reply.read()) == {"length": len(payload),
                                            "sha256": hashlib.sha256(payload).hexdigest()}
    finally:
        conn.close()


def test_chunked_upload(server, pki):
    parts = [os.urandom(70_000) for _ in range(20)]
    with TLSConnection(server.host, server.port, pki.client_context()) as conn:
        conn.request("POST", "/", {"X-Op": "digest", "Transfer-Encoding": "chunked"})
        for part in parts:
            conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        conn.send(b"0\r\n\r\n")
        reply = conn.read_response()
    whole = b"".join(parts)
    assert reply.json() == {"length": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_spooled_multipart_upload(server, pki):
    content = os.urandom(3 * 1024 * 1024)  # over --spool-size: written to a file as it arrives
    boundary = b"tls-boundary-7d1"
    body = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"upload\"; "
            b"filename=\"blob.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            + content + b"\r\n--" + boundary + b"--\r\n")
    with TLSConnection(server.host, server.port, pki.client_context()) as conn:
        conn.request("POST", "/", {"X-Op": "file",
                                   "Content-Type": "multipart/form-data; boundary=" + boundary.decode()},
                     body)
        reply = conn.read_response()
    assert reply.status == 200, reply
    assert reply.json() == {"length": len(content), "sha256": hashlib.sha256(content).hexdigest()}


def test_streamed_answer(server, pki):
    with TLSConnection(server.host, server.port, pki.client_context()) as conn:
        conn.request("POST", "/", {"X-Op": "stream", "X-Pieces": "300", "X-Size": "5000"})
        reply = conn.read_response()
        assert reply.header("transfer-encoding") == "chunked"
        assert reply.body == pieces(300, 5000)
        conn.request("GET", "/healthz")  # the connection goes on after the stream
        assert conn.read_response().status == 200


def test_http_1_0_streamed_answer_ends_with_the_connection(server, pki):
    """HTTP/1.0 has no chunked coding: the answer ends at the close (close_notify, then FIN)."""
    with TLSConnection(server.host, server.port, pki.client_context()) as conn:
        conn.request("POST", "/", {"X-Op": "stream", "X-Pieces": "50", "X-Size": "1000"},
                     version="HTTP/1.0")
        reply = conn.read_response()
    assert reply.header("transfer-encoding") is None
    assert reply.body == pieces(50, 1000)


def test_large_answer_to_a_client_that_reads_late(server, pki):
    """24 MB answered while the client does not read: the SSL writes stop and resume many times,
    each retried with the same bytes."""
    size = 24 * 1024 * 1024
    conn = https(server, pki.client_context())
    try:
        conn.request("POST", "/", headers={"X-Op": "big", "X-Size": str(size)})
        time.sleep(0.5)  # a client that reads late (the behaviour under test): the buffers fill up
        reply = conn.getresponse()
        data = reply.read()
    finally:
        conn.close()
    assert len(data) == size
    assert hashlib.sha256(data).digest() == hashlib.sha256(pattern(size)).digest()


# -- clients that do not speak TLS properly ---------------------------------------------------

def test_stalled_handshakes_do_not_block_others_and_time_out(server, pki):
    silent = socket.create_connection((server.host, server.port), timeout=20)
    partial = socket.create_connection((server.host, server.port), timeout=20)
    partial.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
    try:
        for _ in range(3):
            reply = tls_request(server, pki.client_context(), "POST", "/", JSON, b'{"ok": 1}')
            assert reply.json() == {"echo": '{"ok": 1}'}
        # both are dropped once --head-timeout (2 s) has passed
        for sock in (silent, partial):
            try:
                assert sock.recv(100) == b""
            except ConnectionResetError:
                pass
    finally:
        silent.close()
        partial.close()


def test_a_broken_handshake_is_closed_and_others_go_on(server, pki):
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a handshake record holding nonsense
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP/"), data
    assert tls_request(server, pki.client_context(), "GET", "/").status == 200


@pytest.mark.parametrize("method, body", [("GET", b""), ("POST", b'{"a": 1}' * 20000)])
def test_plain_http_on_the_tls_port_gets_a_clear_400_and_a_close(server, method, body):
    with Connection(server.host, server.port) as conn:
        conn.request(method, "/", JSON if body else None, body)
        reply = conn.read_response()
        assert reply.status == 400
        assert reply.header("connection") == "close"
        assert "https://" in reply.json()["error"]
        assert conn.closed_by_peer(timeout=10)


def test_over_max_connections_a_tls_client_is_closed_not_sent_plain_text(servers, pki):
    running = servers(SOURCE, *pki.flags(), "--max-connections", "1")
    with TLSConnection(running.host, running.port, pki.client_context()) as held:
        held.request("GET", "/healthz")
        assert held.read_response().status == 200
        with socket.create_connection((running.host, running.port), timeout=10) as extra:
            extra.sendall(b"\x16\x03\x01\x00\x05hello")
            try:
                data = extra.recv(100)
            except ConnectionResetError:
                data = b""
            assert data == b"", data   # no "HTTP/1.1 503" in clear text on the TLS port
        held.request("GET", "/healthz")   # the held connection is served on
        assert held.read_response().status == 200
    assert tls_request(running, pki.client_context(), "GET", "/healthz").status == 200


# -- client certificates ----------------------------------------------------------------------

def refused(server, context):
    """True when a request with ``context`` fails in the handshake (or right after it)."""
    try:
        tls_request(server, context, "GET", "/")
    except (ssl.SSLError, ConnectionError, ConnectionClosed):
        return True
    return False


def stranger_context(pki, tmp_path):
    """A client trusting the server, with a certificate from a CA the server does not know."""
    stranger = trustme.CA().issue_cert("stranger@example.org")
    stranger_file = tmp_path / "stranger.pem"
    stranger.private_key_and_cert_chain_pem.write_to_path(str(stranger_file))
    context = pki.client_context()
    context.load_cert_chain(str(stranger_file))
    return context


def test_client_certificate_required(servers, pki, tmp_path):
    running = servers(SOURCE, *pki.flags(), "--ssl-cert-reqs", "required",
                      "--ssl-ca-certs", pki.ca_file)
    assert tls_request(running, pki.client_context(client_cert=True), "GET", "/").status == 200
    assert refused(running, pki.client_context())
    assert refused(running, stranger_context(pki, tmp_path))
    assert tls_request(running, pki.client_context(client_cert=True), "GET", "/").status == 200


def test_client_certificate_optional(servers, pki, tmp_path):
    running = servers(SOURCE, *pki.flags(), "--ssl-cert-reqs", "optional",
                      "--ssl-ca-certs", pki.ca_file)
    assert tls_request(running, pki.client_context(), "GET", "/").status == 200
    assert tls_request(running, pki.client_context(client_cert=True), "GET", "/").status == 200
    assert refused(running, stranger_context(pki, tmp_path))  # a certificate sent is checked


# -- processes: workers, drain, reload ----------------------------------------------------------

def test_two_workers_over_tls(servers, pki):
    running = servers(SOURCE, *pki.flags(), "--workers", "2")
    wait_until(lambda: running.log.count("ready in") >= 2, 30, what="both workers ready")
    seen = set()
    for _ in range(200):
        reply = tls_request(running, pki.client_context(), "POST", "/", {"X-Op": "pid"})
        seen.add(reply.json()["pid"])
        if len(seen) == 2:
            break
    assert len(seen) == 2, f"answers came from {seen} only"
    running.proc.send_signal(signal.SIGTERM)
    assert wait_for_exit(running) == 0, running.log


def test_graceful_drain_over_tls(servers, pki):
    running = servers(SOURCE, *pki.flags())
    busy = TLSConnection(running.host, running.port, pki.client_context(), timeout=30)
    idle = TLSConnection(running.host, running.port, pki.client_context(), timeout=30)
    try:
        idle.request("GET", "/")
        assert idle.read_response().status == 200
        busy.request("POST", "/", {"X-Op": "gate"})
        running.wait_for("PREDICT-START")
        running.proc.send_signal(signal.SIGTERM)
        running.wait_for("shutting down")
        assert idle.closed_by_peer(timeout=10)  # idle keep-alive connections close at once
        (running.directory / "release").write_text("")
        reply = busy.read_response()
        assert reply.status == 200 and reply.json() == {"released": True}
        assert busy.closed_by_peer(timeout=10)  # and then the connection closes
    finally:
        busy.close()
        idle.close()
    assert wait_for_exit(running) == 0, running.log


def test_sighup_serves_renewed_certificates_to_new_connections(servers, pki, tmp_path):
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.cert_file, cert_file)
    shutil.copy(pki.key_file, key_file)
    running = servers(SOURCE, "--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file))
    old = TLSConnection(running.host, running.port, pki.client_context())
    try:
        old.request("GET", "/")
        assert old.read_response().status == 200
        assert old.sock.getpeercert(binary_form=True) == pki.server_der

        renewed = pki.ca.issue_cert("127.0.0.1", "localhost")
        renewed_der = ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())
        assert renewed_der != pki.server_der
        renewed.cert_chain_pems[0].write_to_path(str(cert_file))
        renewed.private_key_pem.write_to_path(str(key_file))
        mark = len(running.lines)
        running.proc.send_signal(signal.SIGHUP)
        wait_for_new(running, mark, "TLS certificates reloaded")

        with TLSConnection(running.host, running.port, pki.client_context()) as new:
            assert new.sock.getpeercert(binary_form=True) == renewed_der
            new.request("POST", "/", JSON, b'{"after": "reload"}')
            assert new.read_response().json() == {"echo": '{"after": "reload"}'}

        # the connection opened before the reload goes on, with the certificate it was shown
        old.request("POST", "/", JSON, b'{"still": "open"}')
        assert old.read_response().json() == {"echo": '{"still": "open"}'}
        assert old.sock.getpeercert(binary_form=True) == pki.server_der

        # a reload that cannot read the files keeps the certificates in use
        cert_file.write_text("not a certificate\n")
        mark = len(running.lines)
        running.proc.send_signal(signal.SIGHUP)
        line = wait_for_new(running, mark, "TLS certificates not reloaded")
        assert str(cert_file) in line
        with TLSConnection(running.host, running.port, pki.client_context()) as new:
            assert new.sock.getpeercert(binary_form=True) == renewed_der
    finally:
        old.close()


def test_sighup_reaches_every_worker(servers, pki, tmp_path):
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.cert_file, cert_file)
    shutil.copy(pki.key_file, key_file)
    running = servers(SOURCE, "--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file),
                      "--workers", "2")
    wait_until(lambda: running.log.count("ready in") >= 2, 30, what="both workers ready")
    running.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: running.log.count("TLS certificates reloaded") >= 2, 20,
               what="both workers' certificates reloaded")
    assert running.proc.poll() is None
    assert tls_request(running, pki.client_context(), "GET", "/").status == 200


def renew(pki, cert_file, key_file):
    """A new certificate from the same CA written over ``cert_file``/``key_file``; its DER."""
    renewed = pki.ca.issue_cert("127.0.0.1", "localhost")
    renewed.cert_chain_pems[0].write_to_path(str(cert_file))
    renewed.private_key_pem.write_to_path(str(key_file))
    return ssl.PEM_cert_to_DER_cert(renewed.cert_chain_pems[0].bytes().decode())


def gated_tls(pki, directory, *flags):
    """A TLS server whose predictor's ``__init__`` waits for ``directory/release-init``, with
    copies of the certificate files to renew; ``(server, gate, cert_file, key_file)``."""
    from support.predictors import GATED
    write_predictor(directory, GATED)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    shutil.copy(pki.cert_file, cert_file)
    shutil.copy(pki.key_file, key_file)
    gate = directory / "release-init"
    server = start(directory, None, "--ssl-certfile", str(cert_file), "--ssl-keyfile",
                   str(key_file), *flags, env={"TEST_INIT_GATE": str(gate)}, wait=False)
    return server, gate, cert_file, key_file


def test_https_listens_after_the_build_and_sighup_during_it_reloads(pki, tmp_path):
    from support.predictors import BOUND
    from support.servers import connection_refused
    server, gate, cert_file, key_file = gated_tls(pki, tmp_path / "m")
    try:
        port = int(server.wait_for(BOUND).group(3))
        server.wait_for("INIT-START")
        assert connection_refused(port)  # a TLS port too refuses connections until it can answer
        renewed_der = renew(pki, cert_file, key_file)
        mark = len(server.lines)
        server.proc.send_signal(signal.SIGHUP)  # e.g. a renewal job while a large model loads
        wait_for_new(server, mark, "TLS certificates reloaded")
        assert server.proc.poll() is None, server.log
        assert not any(LISTENING.search(line) for line in server.lines), server.log
        gate.write_text("")
        ready(server)
        assert server.port == port
        lines = server.lines
        listening = next(i for i, line in enumerate(lines) if LISTENING.search(line))
        assert f"listening on https://127.0.0.1:{port}" in lines[listening]
        built = next(i for i, line in enumerate(lines) if "predict gets:" in line)
        assert built < listening, server.log
        assert any(f"POST https://127.0.0.1:{port}/" in line for line in lines if "ready in" in line)
        with TLSConnection(server.host, server.port, pki.client_context()) as conn:
            assert conn.sock.getpeercert(binary_form=True) == renewed_der
            conn.request("POST", "/", JSON, b'{"x": 1}')
            assert conn.read_response().json()["echo"] == {"x": 1}
    finally:
        stop(server)


def test_sighup_reaches_workers_still_building(pki, tmp_path):
    server, gate, cert_file, key_file = gated_tls(pki, tmp_path / "m", "--workers", "2")
    try:
        wait_until(lambda: server.log.count("INIT-START") == 2, 30, what="both workers building")
        renewed_der = renew(pki, cert_file, key_file)
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: server.log.count("TLS certificates reloaded") == 2,
                   what="both workers reloading")
        gate.write_text("")
        ready(server)
        # both ready (then the reload SIGHUP asked for replaces them, with the renewed files too)
        wait_until(lambda: server.log.count("ready in") >= 2, what="both workers ready")
        assert "died" not in server.log, server.log  # no worker ended on the signal
        # the rolling reload SIGHUP also asks for waited for the workers to be ready
        server.wait_for(r"workers are still starting; they are replaced one at a time")
        server.wait_for(r"reload done", timeout=60)
        for _ in range(6):  # whichever worker answers, it shows the renewed certificate
            with TLSConnection(server.host, server.port, pki.client_context()) as conn:
                assert conn.sock.getpeercert(binary_form=True) == renewed_der
    finally:
        stop(server)


# -- start-up errors ------------------------------------------------------------------------------

def encrypted_key(pki, path, password):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(pki.server.private_key_pem.bytes(), None)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(password)))
    return str(path)


def error_lines(output):
    return [line for line in output.splitlines() if " ERROR " in line or "error:" in line]


def test_start_up_errors_name_the_file_at_fault(tmp_path, pki):
    other_key = tmp_path / "other-key.pem"
    pki.ca.issue_cert("example.org").private_key_pem.write_to_path(str(other_key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    locked = encrypted_key(pki, tmp_path / "locked.pem", b"s3cret")
    missing = str(tmp_path / "missing.pem")
    cases = [
        (["--ssl-certfile", missing, "--ssl-keyfile", pki.key_file],
         f"cannot read --ssl-certfile {missing}: No such file or directory"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", missing],
         f"cannot read --ssl-keyfile {missing}"),
        (["--ssl-certfile", str(garbage), "--ssl-keyfile", pki.key_file],
         f"--ssl-certfile {garbage} holds no PEM certificate"),
        (["--ssl-certfile", pki.cert_file],
         f"--ssl-certfile {pki.cert_file} holds no private key"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", str(other_key)],
         f"the private key in --ssl-keyfile {other_key} does not belong to the certificate"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", locked],
         f"--ssl-keyfile {locked} is encrypted; give its password with --ssl-keyfile-password"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", locked,
          "--ssl-keyfile-password", "wrong"], f"cannot decrypt --ssl-keyfile {locked}"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", pki.key_file,
          "--ssl-ca-certs", str(garbage), "--ssl-cert-reqs", "required"],
         f"--ssl-ca-certs {garbage} holds no usable PEM certificate"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", pki.key_file,
          "--ssl-ciphers", "NO-SUCH-CIPHER"], "--ssl-ciphers 'NO-SUCH-CIPHER' selects no cipher"),
        (["--ssl-keyfile", pki.key_file], "--ssl-keyfile need --ssl-certfile"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", pki.key_file,
          "--ssl-cert-reqs", "required"], "--ssl-cert-reqs required needs --ssl-ca-certs"),
        (["--ssl-certfile", pki.cert_file, "--ssl-keyfile", pki.key_file,
          "--ssl-cert-reqs", "sometimes"], "--ssl-cert-reqs must be one of none, optional, required"),
        (["--ssl-certfile", missing, "--ssl-keyfile", pki.key_file, "--workers", "2"],
         f"cannot read --ssl-certfile {missing}"),
    ]
    for number, (flags, expected) in enumerate(cases):
        code, output = serve_to_exit(tmp_path / f"case{number}", SOURCE, *flags, timeout=60)
        assert code != 0, (flags, output)
        errors = error_lines(output)
        assert len(errors) == 1 and expected in errors[0], (flags, output)
        assert "Traceback" not in output, output


@pytest.mark.parametrize("flags", [(), ("--workers", "2")], ids=["one", "workers"])
def test_a_bad_certificate_fails_before_the_predictor_is_built(tmp_path, pki, flags):
    from support.predictors import GATED
    missing = str(tmp_path / "missing.pem")
    code, output = serve_to_exit(tmp_path / "m", GATED, "--ssl-certfile", missing,
                                 "--ssl-keyfile", pki.key_file, *flags,
                                 env={"TEST_INIT_GATE": str(tmp_path / "never")}, timeout=60)
    assert code == 1, output
    assert f"cannot read --ssl-certfile {missing}" in output, output
    assert "INIT-START" not in output and "building" not in output, output


def test_an_encrypted_key_with_its_password(servers, pki, tmp_path):
    locked = encrypted_key(pki, tmp_path / "locked.pem", b"s3cret")
    running = servers(SOURCE, "--ssl-certfile", pki.cert_file, "--ssl-keyfile", locked,
                      env={"LITE_SERVING_SSL_KEYFILE_PASSWORD": "s3cret"})
    assert tls_request(running, pki.client_context(), "GET", "/").status == 200


def test_tls_settings_from_environment_variables(servers, pki):
    running = servers(SOURCE, env={"LITE_SERVING_SSL_CERTFILE": pki.cert_file,
                                   "LITE_SERVING_SSL_KEYFILE": pki.key_file,
                                   "LITE_SERVING_SSL_CERT_REQS": "required",
                                   "LITE_SERVING_SSL_CA_CERTS": pki.ca_file})
    assert "listening on https://" in running.log
    assert tls_request(running, pki.client_context(client_cert=True), "GET", "/").status == 200
    assert refused(running, pki.client_context())


# -- the v2 routes with tritonclient -----------------------------------------------------------

def test_tritonclient_over_https(tmp_path, pki):
    pytest.importorskip("numpy")
    pytest.importorskip("onnxruntime")
    httpclient = pytest.importorskip("tritonclient.http")
    from support.iris import IRIS, check_with_tritonclient
    directory = tmp_path / "bare"
    directory.mkdir()
    shutil.copy(os.path.join(IRIS, "model.onnx"), directory / "iris.onnx")
    running = start(directory, None, *pki.flags())
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{running.port}", ssl=True,
                                                  ssl_options={"ca_certs": pki.ca_file})
        try:
            check_with_tritonclient(client, httpclient)
        finally:
            client.close()
        # a client that does not trust the server's CA is refused by its own check
        stranger = httpclient.InferenceServerClient(f"127.0.0.1:{running.port}", ssl=True)
        with pytest.raises(Exception, match="(?i)certificate"):
            stranger.is_server_live()
        stranger.close()
    finally:
        stop(running)


def test_many_clients_at_once(server, pki):
    """Handshakes and requests of many concurrent clients interleave in the one loop."""
    failures = []

    def client(n):
        try:
            with TLSConnection(server.host, server.port, pki.client_context(), timeout=30) as conn:
                for i in range(5):
                    conn.request("POST", "/", JSON, b'{"c": %d, "i": %d}' % (n, i))
                    reply = conn.read_response()
                    if reply.json() != {"echo": '{"c": %d, "i": %d}' % (n, i)}:
                        failures.append((n, i, reply))
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append((n, repr(exc)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
