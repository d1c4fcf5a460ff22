"""Request ids: the client's ``X-Request-Id`` (or the platform's ``X-Openbayes-Serving-Request-Id``),
else one made here; echoed on the answer, written in the access line, used by ``emit_event``."""

import contextvars
import itertools
import os

LONGEST = 128   # a longer id sent by a client is replaced by one of ours


class RequestSlot:
    """Where the head of the request being served in one context is: ``head``, None between
    requests and in a batch (predict_batch serves several requests)."""

    __slots__ = ("head",)

    def __init__(self, head=None):
        self.head = head


# The RequestSlot of this context: emit_event reads its head. A thread that runs predict keeps one
# slot and fills it around each call (a ContextVar.set per request would copy the context's
# mapping and make a token: about 2,400 instructions a request); an asyncio task that runs predict,
# and the thread that produces a streamed answer, get a slot of their own in their own context.
# Work that predict hands to another thread or task with a copy of its context (asyncio.to_thread)
# shares the slot: while predict waits for it, the slot holds its request; work left running after
# predict returned sees what the slot holds then (the thread's next request, or none), and passes
# ``id=`` to emit_event to keep its own.
current_request = contextvars.ContextVar("lite_serving_request", default=None)


def thread_slot():
    """This context's slot, made the first time a thread asks."""
    slot = current_request.get()
    if slot is None:
        slot = RequestSlot()
        current_request.set(slot)
    return slot


def current_head():
    """The head of the request served here, or None."""
    slot = current_request.get()
    return None if slot is None else slot.head


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
