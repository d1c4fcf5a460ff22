"""The development traceback page: what a failed ``predict`` answers a client on this machine.

With ``--dev`` (the default in local development, never in production) an
exception escaping ``predict`` answers 500 with its traceback, as an HTML
page when the client prefers HTML (a browser) and as JSON otherwise, but only
to a client connecting from a loopback address: others get the usual JSON
error. The page shows source lines, never variables' values, and has no
console: nothing on it runs code (openbayes-serving's debugger page has one,
which hands the machine to anyone who can reach the port).
"""

import html
import linecache
import os
import traceback
from collections import namedtuple

from lite_serving.codecs.json_codec import JSON_TYPE
from lite_serving.codecs.json_codec import dumps as encode_json
from lite_serving.errors import describe_exception
from lite_serving.predictor.encoder import accept_quality, parse_accept
from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")

CONTEXT = 3  # source lines shown before and after each frame's line
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The page holds no script; if escaping ever failed, the browser would still run none.
HEADERS = b"Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n"
# The 500 answer's content type, body and extra header lines
Page = namedtuple("Page", ("content_type", "body", "extra"))


def is_loopback(peer):
    """True for a peer address on this machine (127.0.0.0/8, ::1, IPv4-mapped loopback)."""
    host = peer[0] if isinstance(peer, tuple) and peer else None
    if not isinstance(host, str):
        return False
    import ipaddress
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def prefers_html(accept):
    """Whether the client asks for HTML more than for JSON (a browser does; curl does not), read
    as POST /'s answers read Accept."""
    if not accept:
        return False
    ranges = parse_accept(accept)
    return accept_quality("text/html", ranges)[0] > accept_quality("application/json", ranges)[0]


def predictor_frames(exc):
    """The frames of the traceback outside lite_serving, each with a few source lines around it."""
    frames = []
    for frame in traceback.extract_tb(exc.__traceback__):
        filename = os.path.abspath(frame.filename)
        if filename.startswith(PACKAGE_DIR + os.sep):
            continue
        lineno = frame.lineno or 0
        context = []
        for n in range(max(1, lineno - CONTEXT), lineno + CONTEXT + 1):
            text = linecache.getline(frame.filename, n)
            if text:
                context.append([n, text.rstrip("\n")])
        frames.append({"file": frame.filename, "line": lineno, "function": frame.name,
                       "code": frame.line or "", "context": context})
    return frames


def render_failure(exc, view):
    """The :class:`Page` for a loopback client; None for others.

    Never raises: a page that cannot be made leaves the usual JSON error.
    """
    try:
        if not is_loopback(getattr(view, "peer", None)):
            return None
        return _render(exc, view)
    except Exception:
        log.exception("the --dev traceback page could not be made; answering the usual error")
        return None


def _render(exc, view):
    message = "predict failed: " + describe_exception(exc)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    frames = predictor_frames(exc)
    head = view.head
    if prefers_html(head.accept):
        page = _html(message, text, frames, f"{head.method} {head.target}")
        return Page(b"text/html; charset=utf-8", page.encode("utf-8", "replace"), HEADERS)
    body = encode_json({"error": message, "traceback": text, "frames": frames})
    return Page(JSON_TYPE, body, HEADERS)


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222;max-width:70em}
h1{font-size:1.3em;color:#a40000}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
.frame{margin:1.2em 0}.where{font-family:monospace;color:#555}
.line{background:#ffe8a8;display:block}.note{color:#666;font-size:.9em}
"""


def _html(message, text, frames, request_line):
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>", esc(message[:120]),
             "</title><style>", STYLE, "</style></head><body><h1>", esc(message), "</h1>",
             "<p class='where'>", esc(request_line), "</p>"]
    for frame in reversed(frames):  # the line that raised first
        parts += ["<div class='frame'><div class='where'>", esc(frame["file"]), ", line ",
                  str(frame["line"]), ", in ", esc(frame["function"]), "</div><pre>"]
        for n, line in frame["context"]:
            row = esc(f"{n:>5}  {line}")
            parts.append(f"<span class='line'>{row}</span>" if n == frame["line"] else row + "\n")
        parts.append("</pre></div>")
    parts += ["<h2>Traceback</h2><pre>", esc(text), "</pre>",
              "<p class='note'>Shown because lite_serving runs with --dev (the default in local "
              "development) and this client is on the same machine; other clients get a JSON "
              "error. Start with --no-dev to turn it off.</p></body></html>"]
    return "".join(parts)
