"""Errors a predictor raises on purpose, and errors that stop start-up."""


class ServingError(Exception):
    """Raise in ``predict`` to answer ``status_code`` with ``{**payload, "error": message}``."""

    def __init__(self, message, status_code=400, payload=None):
        Exception.__init__(self, message)
        self.message = message
        self.status_code = status_code
        self.payload = {**(payload or {}), "error": message}


class StartupError(Exception):
    """A problem with the predictor or its model that stops start-up with one clear line."""


def describe_exception(exc):
    """``Type: message``, even for an exception whose ``str()`` itself fails."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__
