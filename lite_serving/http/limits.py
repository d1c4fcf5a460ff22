"""What both request parsers share: their limits, the error they raise, the query decoding errors.

Kept apart from ``parser_py`` so that the compiled parser and the server
import them without importing the pure-Python parser (and ``re``).
"""

import codecs

MAX_HEAD = 65536        # bytes of request line + header fields
MAX_HEADERS = 100       # header field lines
MAX_TARGET = 8192       # bytes of request target
MAX_CHUNK_LINE = 4096   # bytes of one chunk-size line, extensions included

TLS_ON_PLAIN_PORT = ("a TLS handshake was sent to a plain-HTTP port; "
                     "use http:// for this address, or a port that serves TLS")


class ParseError(Exception):
    """Malformed or unacceptable request; ``status`` is the HTTP status to answer."""

    def __init__(self, status, message):
        Exception.__init__(self, status, message)
        self.status = status
        self.message = message

    def __str__(self):
        return f"{self.status} {self.message}"


def _keep_as_escapes(error):
    """Codec error handler: bytes that are not UTF-8 stay visible as ``%XX`` escapes."""
    bad = error.object[error.start:error.end]
    return "".join("%%%02X" % b for b in bad), error.end


# Flask's request.args shows undecodable escapes as escapes ("%ff" → "%FF"), not U+FFFD.
QUERY_ERRORS = "lite_serving.keep-escapes"
codecs.register_error(QUERY_ERRORS, _keep_as_escapes)
