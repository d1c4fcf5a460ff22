"""Helpers for the TLS and API key tests: certificates made with trustme, servers in their own
session, TLS clients.

``Pki(directory)`` writes a CA, a server certificate for 127.0.0.1/localhost and a client
certificate as PEM files; servers are started with ``support.servers.start`` and its flags.
"""

import socket
import ssl

import pytest

from support.http_client import Connection


class Pki:
    """A CA with a server and a client certificate, as files in ``directory``."""

    def __init__(self, directory, name="pki"):
        trustme = pytest.importorskip("trustme")
        self.directory = directory
        self.ca = trustme.CA(organization_name=f"lite_serving test CA {name}")
        self.ca_file = self._write("ca.pem", self.ca.cert_pem)
        self.server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert_file = self._write("server-cert.pem", *self.server.cert_chain_pems)
        self.key_file = self._write("server-key.pem", self.server.private_key_pem)
        self.client = self.ca.issue_cert("client@example.org")
        self.client_file = self._write("client.pem", self.client.private_key_and_cert_chain_pem)

    def _write(self, name, *blobs):
        path = self.directory / name
        path.write_bytes(b"".join(blob.bytes() for blob in blobs))
        return str(path)

    @property
    def server_der(self):
        """The server certificate as DER, to compare with what a client was shown."""
        return ssl.PEM_cert_to_DER_cert(self.server.cert_chain_pems[0].bytes().decode())

    def flags(self):
        return ["--ssl-certfile", self.cert_file, "--ssl-keyfile", self.key_file]

    def client_context(self, client_cert=False):
        """A client context trusting this CA (hostname checked), optionally with its client cert."""
        context = ssl.create_default_context(cafile=self.ca_file)
        if client_cert:
            context.load_cert_chain(self.client_file)
        return context


class TLSConnection(Connection):
    """``http_client.Connection`` over TLS (keep-alive, pipelining, raw bytes) with ``context``."""

    def __init__(self, host, port, context, timeout=10.0, server_hostname="127.0.0.1"):
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            self.sock = context.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.buf = b""
        self.host = host
        self.port = port


def tls_request(server, context, method="GET", target="/", headers=None, body=b""):
    """One request on a fresh TLS connection; the final response."""
    with TLSConnection(server.host, server.port, context) as conn:
        conn.request(method, target, headers, body)
        return conn.read_response(head=method == "HEAD", skip_interim=True)

