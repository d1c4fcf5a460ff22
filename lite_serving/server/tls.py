"""HTTPS on the standard library's ``ssl``: certificates, their reload, and TLS connections accepted.

:class:`Certificates` builds the server's ``SSLContext`` from the ``--ssl-*``
settings (TLS 1.2 at least, no renegotiation) and rebuilds it on SIGHUP: new
connections get the new context, open ones keep theirs. A file that cannot be
used stops start-up with one line naming it; at a reload it is logged and the
context in use stays.

:class:`TLSAcceptor` is what the server calls for each accepted socket when the
port speaks TLS: a :class:`~lite_serving.server.tls_transport.TLSTransport` with a
:class:`PendingTLS` stand-in in the server's connection table until the
handshake is done (so the handshake has the head timeout as its deadline, and
counts against ``--max-connections``), then an ordinary
:class:`~lite_serving.server.connection.HTTPConnection`.
"""

import ssl

from lite_serving.errors import StartupError
from lite_serving.process.logs import get_logger
from lite_serving.server.connection import LINGER_SECONDS, HTTPConnection
from lite_serving.server.tls_transport import TLSTransport

log = get_logger("lite_serving")

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _read(flag, path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise StartupError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def build_context(config):
    """The server's SSLContext from the ``--ssl-*`` settings; StartupError naming the file at fault."""
    certfile, keyfile = config.ssl_certfile, config.ssl_keyfile
    cert_pem = _read("--ssl-certfile", certfile)
    key_flag, key_path = ("--ssl-keyfile", keyfile) if keyfile else ("--ssl-certfile", certfile)
    key_pem = _read(key_flag, key_path) if keyfile else cert_pem
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise StartupError(f"--ssl-certfile {certfile} holds no PEM certificate "
                           "(-----BEGIN CERTIFICATE-----)")
    if b"PRIVATE KEY-----" not in key_pem:
        if keyfile:
            raise StartupError(f"--ssl-keyfile {keyfile} holds no PEM private key")
        raise StartupError(f"--ssl-certfile {certfile} holds no private key; "
                           "name the key's file with --ssl-keyfile")
    encrypted = b"ENCRYPTED" in key_pem
    password = config.ssl_keyfile_password
    if encrypted and not password:
        raise StartupError(f"{key_flag} {key_path} is encrypted; give its password with "
                           "--ssl-keyfile-password or LITE_SERVING_SSL_KEYFILE_PASSWORD")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        # a password is always given, so that OpenSSL never prompts on the terminal
        context.load_cert_chain(certfile, keyfile or None, password=password or "")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise StartupError(f"the private key in {key_flag} {key_path} does not belong to the "
                               f"certificate in --ssl-certfile {certfile}") from None
        if encrypted:
            raise StartupError(f"cannot decrypt {key_flag} {key_path}: check "
                               "--ssl-keyfile-password") from None
        raise StartupError(f"cannot load --ssl-certfile {certfile} with its key {key_path}: "
                           f"{exc.reason or exc}; both must be PEM files") from None
    except OSError as exc:  # the file changed between the reads above and this one
        raise StartupError(f"cannot read --ssl-certfile {certfile} or its key {key_path}: "
                           f"{exc.strerror or exc}") from None
    if config.ssl_ciphers:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise StartupError(f"--ssl-ciphers {config.ssl_ciphers!r} selects no cipher OpenSSL "
                               "knows; see `openssl ciphers -v`") from None
    if config.ssl_ca_certs:
        _read("--ssl-ca-certs", config.ssl_ca_certs)
        try:
            context.load_verify_locations(cafile=config.ssl_ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise StartupError(f"--ssl-ca-certs {config.ssl_ca_certs} holds no usable PEM "
                               f"certificate: {getattr(exc, 'reason', None) or exc}") from None
    context.verify_mode = CERT_REQS[config.ssl_cert_reqs]
    return context


class Certificates:
    """The SSLContext new connections get; rebuilt from the same files by :meth:`reload`."""

    def __init__(self, config):
        self.config = config
        self.context = build_context(config)

    def reload(self):
        """Read the certificate files again (SIGHUP); on a failure the context in use stays."""
        try:
            self.context = build_context(self.config)
        except StartupError as exc:
            log.error("TLS certificates not reloaded, the previous ones stay in use: %s", exc)
            return
        log.info("TLS certificates reloaded from %s; new connections use them",
                 self.config.ssl_certfile)


class PendingTLS:
    """A TLS connection before its handshake is done, as the server's connection table sees it.

    It is the transport's protocol meanwhile; after a plain-HTTP request was refused it is
    given what the client still sends (and drops it), and its end (and closes).
    """

    __slots__ = ("ctx", "transport", "deadline")
    recv_into = False

    def __init__(self, ctx, transport, deadline):
        self.ctx = ctx
        self.transport = transport
        self.deadline = deadline

    def __repr__(self):
        return f"<PendingTLS {self.transport!r}>"

    def check_deadline(self, now):
        """A handshake that has not finished within the head timeout is dropped."""
        if now >= self.deadline:
            self.transport.abort()

    def refused(self):
        """Plain HTTP was answered: linger as a refused request does, then close."""
        self.deadline = self.ctx.loop.now + LINGER_SECONDS

    def data_received(self, data):
        pass

    def eof_received(self):
        self.transport.abort()

    def drain(self):
        """Shutting down: no request can be in progress here."""
        self.transport.abort()

    def abort(self):
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self):
        self.transport = None
        ctx = self.ctx
        ctx.connections.pop(id(self), None)
        ctx.metrics.connections = len(ctx.connections)


class TLSAcceptor:
    """Makes the accepted sockets of a server TLS connections (I/O thread)."""

    def __init__(self, server, certificates):
        self.ctx = server.ctx
        self.loop = server.loop
        self.budget = server.budget
        self.metrics = server.metrics
        self.certificates = certificates
        self.high = server.config.max_pending_output
        self.handshake_timeout = server.config.head_timeout

    def accept(self, sock, peer):
        """Begin the TLS connection of an accepted, non-blocking socket."""
        transport = TLSTransport(self.loop, sock, peer, self.budget, self.metrics, self.high,
                                 self.high // 4, self.certificates.context, self._opened)
        pending = PendingTLS(self.ctx, transport, self.loop.now + self.handshake_timeout)
        transport.protocol = pending
        ctx = self.ctx
        ctx.connections[id(pending)] = pending
        ctx.metrics.connections = len(ctx.connections)
        transport.start()

    def _opened(self, transport):
        """The handshake is done: the connection speaks HTTP from now on."""
        ctx = self.ctx
        pending = transport.protocol
        ctx.connections.pop(id(pending), None)
        pending.transport = None
        conn = HTTPConnection(ctx, transport)
        ctx.connections[id(conn)] = conn
