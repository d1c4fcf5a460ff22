"""lite_serving's loggers, which import ``logging`` only once the application has.

``logging`` and what it imports (traceback, linecache, tokenize, string...)
cost a few milliseconds of every start-up, a tenth of what it takes to answer
the first request. Where lite_serving's lines go is decided when ``run()``
starts (:func:`setup`), as it always was:

- if the application has imported ``logging`` by then, lite_serving sets up
  its loggers there at once (its own stderr handler, unless the application
  put handlers on the ``lite_serving`` or the root logger);
- otherwise the application has configured nothing, and lite_serving writes
  its lines to stderr itself, in the format of its own handler, until
  ``logging`` is imported by anyone: as soon as the ``logging`` module has
  run (an import hook sees it), lite_serving sets it up exactly as it would
  have at start-up (its own handler, which the application may then change
  like any other) and goes through it from then on.

Lines with a traceback (``exception``, ``exc_info``) always go through
``logging``: they are rare, and its formatting of them is the reference.

``--log-format json`` makes every line one JSON object (``time``, ``level``,
``logger``, ``pid``, ``message``, then the record's own fields, a traceback as
``traceback``), both where lite_serving writes its lines itself and in its
handler in ``logging``.
"""

import os
import sys
import threading
import time

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR", CRITICAL: "CRITICAL"}
_LEVELS = {"DEBUG": DEBUG, "INFO": INFO, "WARN": WARNING, "WARNING": WARNING,
           "ERROR": ERROR, "FATAL": CRITICAL, "CRITICAL": CRITICAL}
FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
ROOT = "lite_serving"
ACCESS = "lite_serving.access"


class _Setup:
    """What ``setup`` decided: levels, and the stream while lite_serving writes its own lines."""

    def __init__(self):
        self.done = False        # setup() was called
        self.stream = None       # lite_serving writes here itself (logging not imported yet)
        self.level = INFO        # of the lite_serving logger
        self.access_level = INFO
        self.json = False        # --log-format json
        self.lock = threading.Lock()


_setup = _Setup()
_loggers = {}


def _after_fork_in_child():
    """A forked worker starts with its own lock: the parent's may have been held, at the fork,
    by a thread that does not exist in the child (a predictor module logging from a thread)."""
    _setup.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_logger(name):
    """The logger called ``name`` (``lite_serving`` or one of its children)."""
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = Logger(name)
    return logger


def setup(level, access_log, log_format="text"):
    """lite_serving's loggers at ``level``; access lines at INFO when ``access_log``, else WARNING;
    ``log_format`` "json": one JSON object a line."""
    _setup.level = level
    _setup.access_level = INFO if access_log else WARNING
    _setup.json = log_format == "json"
    _setup.done = True
    if "logging" in sys.modules:
        _setup.stream = None
        _configure_logging(own_only=False)
    else:
        _setup.stream = sys.stderr
        if not any(isinstance(finder, _LoggingImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, _LoggingImport())


class _LoggingImport:
    """Sees the import of ``logging`` while lite_serving writes its own lines, and sets
    lite_serving's loggers up in it as soon as its module has run, before the code importing
    it can touch them: whatever the application then does to them wins, as it would have had
    ``logging`` been set up when ``run()`` started."""

    def find_spec(self, name, path=None, target=None):
        if name != "logging":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, path, target) if find_spec is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        run_module = getattr(loader, "exec_module", None)
        if run_module is None:
            return spec

        def exec_module(module):
            run_module(module)
            _handed_over()

        loader.exec_module = exec_module
        return spec


def level_named(name):
    """The level called ``name`` (``debug``, ``info``, ``warning``, ``error``...); INFO if unknown."""
    return _LEVELS.get(str(name).upper(), INFO)


def shutdown():
    """Flush and close ``logging``'s handlers, if ``logging`` is in use."""
    if "logging" in sys.modules:
        import logging
        logging.shutdown()


def own_stream(name):
    """The stream that lines of logger ``name`` go to when lite_serving writes them itself
    (nobody configured logging), else None: then they go through ``logging``."""
    if _handed_over():
        import logging
        logger = logging.getLogger(name)
        if logger.handlers or not logger.propagate:
            return None
        parent = logger.parent
        handlers = parent.handlers if parent is not None else []
        if (len(handlers) == 1 and getattr(handlers[0], "lite_serving_own", False)
                and not parent.propagate):
            return handlers[0].stream
        return None
    return _setup.stream


def _handed_over():
    """True once lines go through ``logging`` (setting it up on the way when it just appeared)."""
    if _setup.stream is None:
        return True
    if "logging" not in sys.modules:
        return False
    with _setup.lock:
        if _setup.stream is not None:
            _setup.stream = None
            _configure_logging(own_only=True)
    return True


def _configure_logging(own_only):
    """Set up ``logging`` as lite_serving's start-up does; ``own_only``: the application had
    configured nothing when run() started, so lite_serving's own handler it is."""
    import logging
    logger = logging.getLogger(ROOT)
    logger.setLevel(_setup.level)
    if own_only or (not logger.handlers and not logging.getLogger().handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_json_formatter() if _setup.json else logging.Formatter(FORMAT))
        handler.lite_serving_own = True  # the access log may write in this format itself
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger(ACCESS).setLevel(_setup.access_level)


def json_wanted():
    """Whether lines are JSON objects (``--log-format json``)."""
    return _setup.json


def iso_time(seconds):
    """``2026-12-07T11:55:27.123Z``: UTC, milliseconds, as log collectors read it."""
    return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)),
                         int(seconds % 1 * 1000))


def json_line(seconds, level, name, pid, message, fields=None):
    """One log line as a JSON object (without its newline)."""
    obj = {"time": iso_time(seconds), "level": level, "logger": name, "pid": pid,
           "message": message}
    if fields:
        obj.update(fields)
    return flat_json(obj)


_ESCAPES = {**{i: "\\u%04x" % i for i in range(32)}, 0x22: '\\"', 0x5C: "\\\\",
            0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def flat_json(obj):
    """A dict of text, numbers, booleans and None as JSON text (other values as their text),
    without importing a JSON module: the start-up lines come before any is loaded."""
    parts = []
    for key, value in obj.items():
        if value is None:
            text = "null"
        elif value is True or value is False:
            text = "true" if value else "false"
        elif type(value) is int or (type(value) is float and value == value
                                     and value not in (float("inf"), float("-inf"))):
            text = repr(value)
        else:
            text = '"' + str(value).translate(_ESCAPES) + '"'
        parts.append('"' + str(key).translate(_ESCAPES) + '":' + text)
    return "{" + ",".join(parts) + "}"


def _json_formatter():
    """A ``logging.Formatter`` writing each record as one JSON object: the fields above, the
    record's own fields (``extra=``), and its traceback as ``traceback``."""
    import logging

    standard = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
        "message", "asctime", "taskName"}

    class JSONFormatter(logging.Formatter):
        def format(self, record):
            fields = {key: value for key, value in record.__dict__.items() if key not in standard}
            if record.exc_info:
                fields["traceback"] = self.formatException(record.exc_info)
            elif record.exc_text:
                fields["traceback"] = record.exc_text
            if record.stack_info:
                fields["stack"] = self.formatStack(record.stack_info)
            return json_line(record.created, record.levelname, record.name, record.process,
                             record.getMessage(), fields)

    return JSONFormatter()


class Logger:
    """The part of ``logging.Logger`` lite_serving uses; see the module's docstring."""

    __slots__ = ("name", "_real", "_access")

    def __init__(self, name):
        self.name = name
        self._real = None
        self._access = name == ACCESS or name.startswith(ACCESS + ".")

    def _logging(self):
        if self._real is None:
            import logging
            self._real = logging.getLogger(self.name)
        _handed_over()  # logging is imported now: set it up if it was not
        return self._real

    def isEnabledFor(self, level):  # noqa: N802 (logging's name)
        if _handed_over() or not _setup.done:
            return self._logging().isEnabledFor(level)
        return level >= (_setup.access_level if self._access else _setup.level)

    def _write(self, level, msg, args, kwargs):
        if kwargs or _handed_over() or not _setup.done:
            # stacklevel: the record names the caller of info()/error()..., not this module
            try:
                real = self._logging()
            except Exception as exc:
                self._without_logging(level, msg, args, exc)
                return
            real.log(level, msg, *args, stacklevel=3, **kwargs)
            return
        if level < (_setup.access_level if self._access else _setup.level):
            return
        text = str(msg)
        if args:
            if len(args) == 1 and isinstance(args[0], dict) and args[0]:
                args = args[0]
            try:
                text = text % args
            except Exception:  # a message and arguments that do not fit: logging reports it its way
                self._logging().log(level, msg, *args, stacklevel=3)
                return
        stream = _setup.stream
        if stream is None:  # logging was set up meanwhile
            self._logging().log(level, "%s", text, stacklevel=3)
            return
        self._emit(stream, level, text)

    def _emit(self, stream, level, text):
        now = time.time()
        if _setup.json:
            line = json_line(now, _NAMES.get(level, f"Level {level}"), self.name, os.getpid(),
                             text) + "\n"
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            line = (f"{stamp},{int(now % 1 * 1000):03d} {_NAMES.get(level, f'Level {level}')} "
                    f"{self.name}[{os.getpid()}]: {text}\n")
        with _setup.lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):  # stderr closed or full: the line is lost, serving goes on
                pass

    def debug(self, msg, *args, **kwargs):
        self._write(DEBUG, msg, args, kwargs)

    def info(self, msg, *args, **kwargs):
        self._write(INFO, msg, args, kwargs)

    def warning(self, msg, *args, **kwargs):
        self._write(WARNING, msg, args, kwargs)

    def error(self, msg, *args, **kwargs):
        self._write(ERROR, msg, args, kwargs)

    def exception(self, msg, *args, exc_info=True, **kwargs):
        try:
            real = self._logging()
        except Exception as exc:
            self._without_logging(ERROR, msg, args, exc)
            return
        real.error(msg, *args, exc_info=exc_info, stacklevel=2, **kwargs)

    def _without_logging(self, level, msg, args, why):
        """``logging`` cannot be imported (no descriptor or memory left): the line is written
        here, with the exception being handled named, its traceback left out."""
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            text = f"{msg} {args!r}"
        handled = why.__context__   # the exception being handled when logging was needed
        if handled is not None:
            text += f" [{type(handled).__name__}: {handled}]"
        text += f" (traceback not written: {type(why).__name__}: {why})"
        self._emit(sys.stderr, level, text)

    def log(self, level, msg, *args, **kwargs):
        self._write(level, msg, args, kwargs)
