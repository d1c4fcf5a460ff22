"""API keys: with keys configured, a request must carry one, checked as soon as its head is parsed.

Keys come from ``--api-key`` (repeatable; ``LITE_SERVING_API_KEYS`` comma-separated)
and ``--api-key-file`` (one a line, reloaded on SIGHUP). A request carries its key as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. The connection asks
:meth:`APIKeys.check` right after the head is parsed, before any of the body is
read, so an unauthorised request costs neither memory for its body nor a call to
``predict``; its 401 closes the connection when a body would follow.

Needing no key: the liveness and readiness probes (orchestrators cannot send one),
CORS preflights (browsers send them without credentials), the ``/docs`` page
(static: it asks for a key and reads ``/openapi.json`` with it), and ``/metrics``
unless ``--protect-metrics``. Keys are compared as SHA-256 digests with
:func:`hmac.compare_digest`, so the time taken says nothing of how much of a key
was right; they are never logged.
"""

import hashlib
import hmac

from lite_serving.errors import StartupError
from lite_serving.http.replies import json_reply
from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")

PROBES = frozenset(("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"))
# The /docs page holds nothing of the model: it asks for a key, then reads /openapi.json with it.
OPEN_PAGES = frozenset(("/docs",))
MISSING = "this server needs an API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
INVALID = "the API key sent is not valid"
_CHALLENGE = b"WWW-Authenticate: Bearer\r\n"
_INVALID_CHALLENGE = b'WWW-Authenticate: Bearer error="invalid_token"\r\n'


def _digest(key):
    return hashlib.sha256(key.encode("latin-1")).digest()


def _check_key(key, where):
    """A key must be sendable as a header value: printable ASCII, no spaces."""
    if not key or any(not 0x21 <= ord(c) <= 0x7E for c in key):
        raise StartupError(f"the API key {where} is not printable ASCII without spaces; "
                           "keys must fit in a header (the key itself is not shown)")


def read_key_file(path):
    """The keys in ``path``, one a line; blank lines and lines starting with # are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise StartupError(f"cannot read --api-key-file {path}: {reason}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        key = line.strip()
        if key and not key.startswith("#"):
            _check_key(key, f"on line {number} of --api-key-file {path}")
            keys.append(key)
    return keys


class APIKeys:
    """The keys requests are checked against, and the check itself (I/O thread)."""

    def __init__(self, flag_keys, key_file="", protect_metrics=False):
        for number, key in enumerate(flag_keys, 1):
            _check_key(key, f"number {number} of --api-key / LITE_SERVING_API_KEYS")
        self.flag_keys = tuple(flag_keys)
        self.key_file = key_file
        self.open_paths = PROBES | OPEN_PAGES if protect_metrics else PROBES | OPEN_PAGES | {"/metrics"}
        file_keys = read_key_file(key_file) if key_file else []
        if not self.flag_keys and not file_keys:
            raise StartupError(f"--api-key-file {key_file} holds no key; put one key a line")
        self.digests = self._digests(file_keys)

    def _digests(self, file_keys):
        return tuple({_digest(key) for key in (*self.flag_keys, *file_keys)})

    def reload(self):
        """Read ``--api-key-file`` again (SIGHUP); when it cannot be read the keys in use stay."""
        if not self.key_file:
            return
        try:
            file_keys = read_key_file(self.key_file)
        except StartupError as exc:
            log.error("API keys not reloaded, the previous ones stay in use: %s", exc)
            return
        self.digests = self._digests(file_keys)
        if self.digests:
            log.info("API keys reloaded from %s: %d key%s", self.key_file, len(self.digests),
                     "" if len(self.digests) == 1 else "s")
        else:
            log.warning("API keys reloaded from %s: it holds no key, so every request that "
                        "needs one is refused", self.key_file)

    def check(self, head):
        """None when the request may go on; else its 401 reply (closing when a body would follow)."""
        method = head.method
        if method == "GET" or method == "HEAD":
            if head.path in self.open_paths:
                return None
        elif method == "OPTIONS" and head.origin is not None and _is_preflight(head):
            return None
        presented = False
        for name, value in head.fields:
            if name == "authorization":
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer":
                    continue
                token = token.strip()
            elif name == "x-api-key":
                token = value
            else:
                continue
            if self._known(token):
                return None
            presented = True
        body_follows = head.chunked or head.content_length > 0
        if presented:
            return json_reply(401, {"error": INVALID}, head, close=body_follows,
                              extra=_INVALID_CHALLENGE)
        return json_reply(401, {"error": MISSING}, head, close=body_follows, extra=_CHALLENGE)

    def _known(self, token):
        digest = _digest(token)  # header values are latin-1 text: they always encode
        known = False
        for key in self.digests:  # every key compared: the time does not say which one matched
            known |= hmac.compare_digest(digest, key)
        return known


def _is_preflight(head):
    for name, _value in head.fields:
        if name == "access-control-request-method":
            return True
    return False
