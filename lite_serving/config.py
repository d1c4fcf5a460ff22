"""Every setting of lite_serving in one place: its flag, environment variable and default.

Precedence: command-line flag > environment variable > default. The port and
model path follow the platform's conventions (see :func:`default_port`).
"""

import argparse
import os
from dataclasses import dataclass, fields

from .common import detect_env

MIB = 1024 * 1024


def default_port():
    """``OPENBAYES_SERVING_PORT`` > 8080 in notebook containers > 80 in production > 25252."""
    port = os.environ.get("OPENBAYES_SERVING_PORT")
    if port:
        return int(port)
    env = detect_env()
    if env == "gear":
        return 8080
    if env == "production":
        return 80
    return 25252


def default_model_path():
    return "/mnt/project" if detect_env() == "production" else os.getcwd()


@dataclass
class Config:
    """All settings; build one with :func:`parse_config`."""

    host: str = "0.0.0.0"
    port: int = 25252
    model_path: str = "."
    model_name: str = ""
    threads: int = 10
    dispatch: str = "auto"
    workers: int = 1
    log_level: str = "info"
    access_log: bool = True
    max_body_size: int = 100 * MIB
    spool_size: int = 1 * MIB
    max_form_parts: int = 1000
    max_form_field_size: int = 1 * MIB
    max_head_size: int = 64 * 1024
    max_headers: int = 100
    max_target: int = 8192
    keep_alive_timeout: float = 5.0
    head_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 10000
    max_memory: int = 1024 * MIB
    max_pending_input: int = 1 * MIB
    max_pending_output: int = 1 * MIB
    graceful_timeout: float = 30.0
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    @property
    def production(self):
        return detect_env() == "production"


# (field, help text) in the order --help shows them
_HELP = {
    "host": "address to listen on; an IPv6 address binds IPv6 (default 0.0.0.0)",
    "port": "port to listen on (default: $OPENBAYES_SERVING_PORT, else 8080 in notebook "
            "containers, 80 in production, 25252 elsewhere)",
    "model_path": "directory holding the .onnx model, or the model file (default: the model "
                  "directory; /mnt/project in production)",
    "model_name": "name of the ONNX model in the v2 inference protocol routes (default: the "
                  "model file's name without .onnx)",
    "threads": "most threads running predict when it runs off the I/O thread, started as the load "
               "asks for them; 0 means --dispatch inline",
    "dispatch": "auto: predict runs on the I/O thread, and a predict that takes over 20 ms hands the "
                "sockets to another thread (after repeated slow predicts, predict moves to the "
                "threads); threads: always on the predict threads; inline: always on the I/O thread",
    "workers": "worker processes sharing the port",
    "log_level": "debug, info, warning or error",
    "access_log": "log one line per request (method, path, status, duration)",
    "max_body_size": "largest request body in bytes (413 above it)",
    "spool_size": "multipart/form-data bodies larger than this are written to a temporary file "
                  "as they arrive instead of held in memory",
    "max_form_parts": "most parts in a multipart/form-data body (413 above it)",
    "max_form_field_size": "largest non-file field of a form, in bytes (413 above it)",
    "max_head_size": "largest request line + headers in bytes (431 above it)",
    "max_headers": "most header fields in a request (431 above it)",
    "max_target": "longest request target in bytes (414 above it)",
    "keep_alive_timeout": "seconds an idle keep-alive connection stays open",
    "head_timeout": "seconds a client has to send a complete request head",
    "body_timeout": "seconds without progress while a request body is read",
    "max_connections": "open connections; more are answered 503 and closed",
    "max_memory": "bytes all connections together may hold in request bodies, input read ahead and "
                  "answers not yet sent; a body that does not fit is answered 503",
    "max_pending_input": "bytes read ahead on a connection while its request is answered; above "
                         "it the connection is not read",
    "max_pending_output": "answer bytes waiting for a slow client above which its connection is "
                          "not read and no further request of it is handled",
    "graceful_timeout": "seconds in-flight requests get to finish on shutdown",
    "intra_op_threads": "onnxruntime intra-op threads (0: onnxruntime's choice)",
    "inter_op_threads": "onnxruntime inter-op threads (0: onnxruntime's choice)",
}


# The settings of the serving process, for code that runs far from the server (form parsing).
active = Config()


def env_name(field_name):
    return "LITE_SERVING_" + field_name.upper()


def _bool(text):
    return str(text).strip().lower() in ("1", "true", "yes", "on")


class _HelpFormatter(argparse.HelpFormatter):
    """A fixed width (or $COLUMNS): argparse's own lookup imports shutil at every start-up."""

    def __init__(self, prog):
        try:
            width = int(os.environ.get("COLUMNS", "100"))
        except ValueError:
            width = 100
        super().__init__(prog, width=width)


def build_argparser(prog="lite_serving"):
    parser = argparse.ArgumentParser(prog=prog, description="Serve a predictor.py over HTTP.",
                                     formatter_class=_HelpFormatter)
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=_HELP[f.name])
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type if isinstance(f.type, str)
                                                               else f.type.__name__, str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=_HELP[f.name])
    return parser


def parse_config(argv=None, prog="lite_serving"):
    """Flags in ``argv`` (default ``sys.argv[1:]``) over environment variables over defaults."""
    options = build_argparser(prog).parse_args(argv)
    values = {}
    for f in fields(Config):
        given = getattr(options, f.name)
        if given is None:
            raw = os.environ.get(env_name(f.name))
            if raw not in (None, ""):
                kind = f.type if not isinstance(f.type, str) else {"int": int, "float": float,
                                                                   "str": str, "bool": _bool}[f.type]
                given = _bool(raw) if kind is bool else kind(raw)
        if given is not None:
            values[f.name] = given
    values.setdefault("port", default_port())
    values.setdefault("model_path", default_model_path())
    config = Config(**values)
    if config.threads < 0 or config.workers < 1:
        build_argparser(prog).error("--threads must be >= 0 and --workers >= 1")
    if config.dispatch not in ("auto", "threads", "inline"):
        build_argparser(prog).error("--dispatch must be auto, threads or inline")
    if config.max_memory < config.max_body_size:
        build_argparser(prog).error(f"--max-memory ({config.max_memory}) must be at least "
                                    f"--max-body-size ({config.max_body_size})")
    if config.max_pending_input < 1 or config.max_pending_output < 1:
        build_argparser(prog).error("--max-pending-input and --max-pending-output must be positive")
    return config
