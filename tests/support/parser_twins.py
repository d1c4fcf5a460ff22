"""What the differential checks of the two request parsers compare: parser_c and parser_py must
give the same outcome for the same input. Used by the property tests and by bench/fuzz_parser.py."""

from lite_serving.http.parser_py import ParseError

# every attribute of a parsed head
ATTRS = ("method", "target", "path", "query", "version", "fields", "end", "content_length",
         "chunked", "keep_alive", "expect_continue", "content_type", "accept", "origin",
         "request_id", "user_agent")


def typed(value):
    """A value with the types of everything inside it spelled out."""
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    if isinstance(value, tuple):
        return ("tuple", tuple(typed(v) for v in value))
    return (type(value).__name__, value)


def head_outcome(mod, data, *args):
    """``mod.parse_head(data, *args)``: every attribute (typed), None, or the ParseError."""
    try:
        head = mod.parse_head(data, *args)
    except ParseError as exc:
        return ("error", exc.status, exc.message)
    if head is None:
        return None
    return {name: typed(getattr(head, name)) for name in ATTRS}


def decoder_run(mod, pieces, limits):
    """Feed ``pieces`` the way the server does (unconsumed bytes kept, new ones
    appended); returns every step's position, then the final state or error."""
    dec = mod.ChunkedDecoder(*limits)
    steps = []
    buf = b""
    try:
        for piece in pieces:
            buf += piece
            pos = dec.feed(buf)
            steps.append(pos)
            buf = buf[pos:]
            if dec.done:
                break
    except ParseError as exc:
        return steps, ("error", exc.status, exc.message)
    return steps, (dec.done, typed(dec.body()), typed(dec.size), typed(dec.trailers))


def outcome(fn, arg):
    """``fn(arg)`` typed, or the name of what it raised."""
    try:
        return ("ok", typed(fn(arg)))
    except Exception as exc:  # both must fail alike on text they refuse
        return ("raises", type(exc).__name__)
