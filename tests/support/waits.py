"""Waiting on an event (a log line, a /metrics value, a socket answer) instead of sleeping."""

import time


def wait_until(predicate, timeout=20.0, what="condition", interval=0.02, give_up=None):
    """Call ``predicate`` until it returns a true value, and return that value.

    AssertionError naming ``what`` (and the last value seen) when ``timeout`` seconds pass, or
    as soon as ``give_up()`` is true (say, the server has exited: the event will not come).
    The timeout is a bound on a hang, not a measure: the wait ends at the event.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if give_up is not None and give_up():
            last = predicate()   # what arrived just before the end
            if last:
                return last
            raise AssertionError(f"gave up waiting for {what}: the process ended; last value {last!r}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value {last!r}")
        time.sleep(interval)
