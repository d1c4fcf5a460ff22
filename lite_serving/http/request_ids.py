"""Request ids: the client's ``X-Request-Id`` (or the platform's ``X-Openbayes-Serving-Request-Id``),
else one made here; echoed on the answer, written in the access line, used by ``emit_event``."""

import contextvars
import itertools
import os

LONGEST = 128   # a longer id sent by a client is replaced by one of ours

# The head of the request whose predict runs here: set around the call (a predict thread, the I/O
# thread, an asyncio task) and in the context a streamed answer's producer runs in; emit_event reads
# it. None in a batch (predict_batch serves several requests) and outside a request.
current_request = contextvars.ContextVar("lite_serving_request", default=None)


class _Source:
    """A random prefix of this process (made again after a fork: workers never share ids) and
    a counter: ids unique across the server without a lock or a system call per request."""

    prefix = None
    counter = None


def _forget():
    _Source.prefix = None


os.register_at_fork(after_in_child=_forget)


def new_request_id():
    """A fresh id: 12 hex digits of this process, then a count in 8 or more hex digits."""
    if _Source.prefix is None:
        _Source.prefix = os.urandom(6).hex()
        _Source.counter = itertools.count(1)
    return "%s%08x" % (_Source.prefix, next(_Source.counter))


def request_id(head):
    """The id of the request with head ``head``, made (and kept on the head) when it has none."""
    rid = head.request_id
    if not rid or len(rid) > LONGEST:
        rid = head.request_id = new_request_id()
    return rid
