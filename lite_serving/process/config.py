"""Every setting of lite_serving in one place: its flag, environment variable and default.

Precedence: command-line flag > ``LITE_SERVING_<NAME>`` environment variable >
the platform's conventions (:func:`default_port`, :func:`default_model_path`) >
default. The command line is read by a small exact-match parser; argparse is
imported only for ``--help``, errors and abbreviated flags, which it alone
understands (it costs milliseconds of every start).
"""

import os

from lite_serving.common import detect_env

MIB = 1024 * 1024


class Setting:
    """One setting: its name, flag (``--name-with-dashes`` unless given), default, type and help.

    ``many``: the flag may be given several times and the variable holds the
    values separated by commas; the setting is then a tuple of them.
    """

    __slots__ = ("name", "default", "kind", "help", "default_text", "flag", "many")

    def __init__(self, name, default, kind, help, default_text=None, flag=None, many=False):
        self.name = name
        self.default = default
        self.kind = kind
        self.help = help
        self.default_text = default_text
        self.flag = flag or "--" + name.replace("_", "-")
        self.many = many

    @property
    def env(self):
        return env_name(self.name)


PORT_DEFAULT_TEXT = ("8080 when OPENBAYES_JOB_URL is set, else 80 when OPENBAYES_SERVING_PRODUCTION is "
                     "set, else $OPENBAYES_SERVING_PORT, else 25252")

# In the order --help shows them.
SETTINGS = (
    Setting("host", "0.0.0.0", str, "address to listen on; an IPv6 address binds IPv6"),
    Setting("port", 25252, int, "port to listen on; 0 takes any free port (the log shows which)",
            PORT_DEFAULT_TEXT),
    Setting("model_path", ".", str, "the .onnx model file, or the directory holding it",
            "the model directory; /mnt/project in production"),
    Setting("model_name", "", str, "name of the ONNX model on the /v2 inference protocol routes",
            "the model file's name without .onnx"),
    Setting("threads", 10, int, "most threads running predict when it runs off the I/O thread, "
            "started as requests wait for one; 0 means --dispatch inline"),
    Setting("max_batch_size", 32, int,
            "most requests one predict_batch call (or one run of a batchable ONNX model) is given; "
            "1 turns batching off (predict is used when the class has it)"),
    Setting("max_batch_delay", 0.0, float,
            "milliseconds a batch may wait for more requests after its first; 0: a batch is what "
            "waits when the model becomes free, with no added latency",
            "0"),
    Setting("dispatch", "auto", str,
            "auto: predict runs on the I/O thread, and a predict that takes over 20 ms hands the "
            "sockets to another thread (after repeated slow predicts, predict moves to the "
            "threads); threads: always on the predict threads; inline: always on the I/O thread"),
    Setting("workers", 1, int, "worker processes sharing the port; a supervisor restarts any that dies"),
    Setting("listen_early", False, bool,
            "accept connections while the predictor is being built: /healthz and /readyz answer at "
            "once, GET / and POST / answer 503 until it is ready (by default the port refuses "
            "connections until then, as openbayes-serving's does)"),
    Setting("dev", False, bool,
            "development mode: a failing predict answers a traceback page (HTML for browsers, "
            "JSON otherwise) to clients on this machine (loopback) only; never in production"),
    Setting("reload", False, bool,
            "restart the server when predictor.py or a file beside it changes (for development)"),
    Setting("log_level", "info", str, "debug, info, warning or error"),
    Setting("log_format", "text", str,
            "text: one line of text per event; json: one JSON object per line (time, level, "
            "logger, message, and an access line's fields), for log collectors"),
    Setting("access_log", True, bool, "log one line per request (peer, method, target, status, "
            "duration)"),
    Setting("max_body_size", 100 * MIB, int, "largest request body in bytes (413 above it)"),
    Setting("spool_size", 1 * MIB, int, "multipart/form-data bodies larger than this are parsed "
            "as they arrive, each file part written to a temporary file, not held in memory"),
    Setting("max_form_parts", 1000, int, "most parts in a multipart/form-data body (413 above it)"),
    Setting("max_form_field_size", 1 * MIB, int,
            "largest non-file field of a form, in bytes (413 above it)"),
    Setting("max_head_size", 64 * 1024, int, "largest request line + headers in bytes (431 above it)"),
    Setting("max_headers", 100, int, "most header fields in a request (431 above it)"),
    Setting("max_target", 8192, int, "longest request target in bytes (414 above it)"),
    Setting("keep_alive_timeout", 5.0, float, "seconds an idle keep-alive connection stays open"),
    Setting("head_timeout", 10.0, float, "seconds a client has to send a complete request head"),
    Setting("body_timeout", 60.0, float, "seconds without progress while a request body is read"),
    Setting("max_connections", 10000, int,
            "open connections; more are answered 503 and closed (on an HTTPS port: closed)"),
    Setting("max_memory", 1024 * MIB, int,
            "bytes all connections together may hold in request bodies, input read ahead and "
            "answers not yet sent; a body that does not fit is answered 503 before it is read"),
    Setting("max_pending_input", 1 * MIB, int,
            "bytes read ahead on a connection while its request is answered; above it the "
            "connection is not read"),
    Setting("max_pending_output", 1 * MIB, int,
            "answer bytes waiting for a slow client above which its connection is not read and "
            "no further request of it is handled"),
    Setting("graceful_timeout", 30.0, float, "seconds in-flight requests get to finish on shutdown"),
    Setting("predict_timeout", 0.0, float,
            "seconds a predict call may run: past it its client is answered 504 and the call is "
            "counted as stuck (a thread cannot be stopped); while every predict thread is stuck, "
            "predicts are answered 503 and /readyz fails, and /healthz too once that lasts over "
            "this long again; 0: no limit", "0: no limit"),
    Setting("worker_timeout", 30.0, float,
            "with --workers: seconds a worker's I/O loop may stop turning before the supervisor "
            "replaces it"),
    Setting("worker_start_timeout", 600.0, float,
            "with --workers: seconds a worker has to build its predictor and listen before the "
            "supervisor replaces it"),
    Setting("reuse_port", False, bool,
            "bind with SO_REUSEPORT, so that other processes may listen on the same port (by "
            "default a port in use is an error)"),
    Setting("intra_op_threads", 0, int, "onnxruntime intra-op threads (0: onnxruntime's choice)"),
    Setting("inter_op_threads", 0, int, "onnxruntime inter-op threads (0: onnxruntime's choice)"),
    Setting("ssl_certfile", "", str, "PEM certificate (chain) to serve HTTPS with; the port then "
            "speaks TLS only (reloaded on SIGHUP)", "none: plain HTTP"),
    Setting("ssl_keyfile", "", str, "PEM private key of --ssl-certfile",
            "the key inside --ssl-certfile"),
    Setting("ssl_keyfile_password", "", str, "password of an encrypted --ssl-keyfile", "none"),
    Setting("ssl_ca_certs", "", str, "PEM bundle of the CAs whose client certificates are accepted",
            "none"),
    Setting("ssl_cert_reqs", "none", str,
            "client certificates: none, optional (checked when sent) or required"),
    Setting("ssl_ciphers", "", str,
            "OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults)", "OpenSSL's"),
    Setting("api_keys", (), str, "API key a request must carry (Authorization: Bearer KEY or "
            "X-API-Key: KEY); repeat the flag for several keys, the variable separates them with "
            "commas", "none: no key is asked for", flag="--api-key", many=True),
    Setting("api_key_file", "", str,
            "file of API keys, one a line (# starts a comment), reloaded on SIGHUP", "none"),
    Setting("protect_metrics", False, bool,
            "require an API key for /metrics too (the probes never need one)"),
    Setting("docs", True, bool,
            "serve GET /openapi.json (an OpenAPI 3.1 description of the routes and the model) and "
            "GET /docs (a page to try the model); --no-docs turns both off"),
    Setting("cors_allow_origins", (), str,
            "origins browsers may call from, comma-separated (e.g. https://app.example.com); * "
            "allows any origin without credentials",
            "every Origin is allowed, with credentials", many=True),
)
# by flag, dashes read as underscores: --model_path is --model-path
BY_FLAG = {s.flag[2:].replace("-", "_"): s for s in SETTINGS}
SECRETS = frozenset(("ssl_keyfile_password", "api_keys"))   # never shown by repr(Config)
CERT_REQS = ("none", "optional", "required")
LOG_FORMATS = ("text", "json")
# files and directories: relative ones are relative to where the command was typed
PATHS = ("model_path", "ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "api_key_file")
# LITE_SERVING_* variables that are not settings
OTHER_VARIABLES = ("LITE_SERVING_PURE", "LITE_SERVING_ALIAS", "LITE_SERVING_NO_EXT",
                   "LITE_SERVING_RELOADER_PID", "LITE_SERVING_WORKER",
                   # the test suite's and the tools' own
                   "LITE_SERVING_REQUIRE_COMPILED", "LITE_SERVING_FUZZ_EXAMPLES",
                   "LITE_SERVING_CROSS_CACHE")
KIND_NAMES = {int: "an integer", float: "a number", str: "a text", bool: "a boolean"}


class Config:
    """All settings, as attributes named like the flags; build one with :func:`parse_config`."""

    def __init__(self, **values):
        for s in SETTINGS:
            setattr(self, s.name, values.pop(s.name, s.default))
        if values:
            raise TypeError(f"unknown settings: {', '.join(sorted(values))}")

    def __repr__(self):
        return "Config(" + ", ".join(f"{s.name}={self._shown(s.name)}" for s in SETTINGS) + ")"

    def _shown(self, name):
        value = getattr(self, name)
        return "'***'" if name in SECRETS and value else repr(value)

    @property
    def production(self):
        return detect_env() == "production"

    @property
    def dev_page(self):
        """Whether a failed predict answers loopback clients with its traceback: only when
        asked for (``--dev``), never in production."""
        return bool(self.dev) and detect_env() != "production"


# The settings of the serving process, for code that runs far from the server (form parsing).
active = Config()

# The directory the command was typed in: ``lite-serving DIR`` moves into DIR before the
# predictor (and so parse_config) runs, and sets this first.
launch_directory = None


def env_name(field_name):
    return "LITE_SERVING_" + field_name.upper()


class ConfigError(ValueError):
    """A setting with a value lite_serving cannot use; the message says which and why."""


def default_port():
    """The platform's port, decided as openbayes-serving decides it.

    8080 in notebook containers (``OPENBAYES_JOB_URL``, which wins over
    production), else 80 in production, else ``OPENBAYES_SERVING_PORT``, else
    25252: in production and notebook containers the platform's port wins over
    ``OPENBAYES_SERVING_PORT``.
    """
    env = detect_env()
    if env == "gear":
        return 8080
    if env == "production":
        return 80
    raw = os.environ.get("OPENBAYES_SERVING_PORT", "")
    if raw.strip() == "":
        return 25252
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"OPENBAYES_SERVING_PORT must be a port number, got {raw!r}") from None


def default_model_path():
    return "/mnt/project" if detect_env() == "production" else os.getcwd()


def _bool(text):
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


def _convert(setting, raw):
    if setting.many:
        return tuple(setting.kind(item.strip()) for item in raw.split(",") if item.strip())
    return _bool(raw) if setting.kind is bool else setting.kind(raw)


def _exact_flags(argv):
    """``{name: value}`` when ``argv`` holds only flags spelled exactly; None to let argparse decide.

    argparse alone handles ``--help``, abbreviations, bad values and unknown
    flags, so that its messages and rules stay the ones users see.
    """
    values = {}
    i, n = 0, len(argv)
    while i < n:
        arg = argv[i]
        if not arg.startswith("--"):
            return None
        name, eq, value = arg[2:].partition("=")
        key = name.replace("-", "_")
        setting = BY_FLAG.get(key)
        if setting is None:
            setting = BY_FLAG.get(key[3:]) if key.startswith("no_") else None
            if setting is None or setting.kind is not bool or eq:
                return None
            values[setting.name] = False
        elif setting.kind is bool:
            if eq:
                return None
            values[setting.name] = True
        else:
            if not eq:
                i += 1
                if i == n or argv[i].startswith("-"):
                    return None
                value = argv[i]
            try:
                value = setting.kind(value)
            except ValueError:
                return None
            if setting.many:
                values[setting.name] = values.get(setting.name, ()) + (value,)
            else:
                values[setting.name] = value
        i += 1
    return values


def build_argparser(prog="lite_serving", directory=False):
    """The argparse parser of every flag, for ``--help`` and error messages.

    ``directory``: show the DIR argument of ``lite-serving DIR [flags]``. Flags
    must be spelled in full (an abbreviation could silently mean another flag),
    and an error is one line naming the command as typed, then where the flags
    are listed, instead of argparse's usage block.
    """
    import argparse

    class HelpFormatter(argparse.HelpFormatter):
        """A fixed width (or $COLUMNS): argparse's own lookup imports shutil."""

        def __init__(self, prog):
            try:
                width = int(os.environ.get("COLUMNS", "100"))
            except ValueError:
                width = 100
            super().__init__(prog, width=width, max_help_position=32)

    class ArgumentParser(argparse.ArgumentParser):
        def error(self, message):
            self.exit(2, f"{self.prog}: error: {_with_suggestion(message)}\n"
                         f"({self.prog} --help lists every flag)\n")

    parser = ArgumentParser(
        prog=prog, formatter_class=HelpFormatter, allow_abbrev=False,
        description="Serve a predictor.py over HTTP." + (
            " DIR holds predictor.py (or a .onnx model, or a start.sh to run instead); "
            "`lite-serving init [FILE]` writes a commented predictor template." if directory else ""),
        epilog="Every flag can also be set by the environment variable named beside it; the flag "
               "wins. Paths are relative to the directory the command runs in. The environment is "
               "local development unless OPENBAYES_JOB_URL (notebook containers) or "
               "OPENBAYES_SERVING_PRODUCTION (production) is set.")
    if directory:
        parser.add_argument("directory", metavar="DIR", help="the model directory, or a predictor .py file")
    for s in SETTINGS:
        default = s.default_text or ("off" if s.default is False else repr(s.default)
                                     if s.kind is str else str(s.default))
        text = f"{s.help} (default: {default}; env {s.env})"
        if s.kind is bool:
            parser.add_argument(s.flag, dest=s.name, action=argparse.BooleanOptionalAction,
                                default=None, help=text)
        elif s.many:
            parser.add_argument(s.flag, dest=s.name, action="append", type=s.kind, default=None,
                                help=text, metavar=_metavar(s))
        else:
            parser.add_argument(s.flag, dest=s.name, type=s.kind, default=None, help=text,
                                metavar=_metavar(s))
    return parser


def _with_suggestion(message):
    """argparse's message about an unknown flag, with the flag it most likely meant."""
    if not message.startswith("unrecognized arguments:"):
        return message
    known = [s.flag for s in SETTINGS] + ["--no-" + s.flag[2:] for s in SETTINGS if s.kind is bool]
    for arg in message.partition(":")[2].split():
        if arg.startswith("--"):
            near = _closest(arg.partition("=")[0], known)
            if near:
                return f"{message}; did you mean {near}? (flags must be spelled in full)"
    return message


def _closest(word, candidates):
    """The candidate ``word`` most likely meant: one it abbreviates, else the most similar."""
    starting = [c for c in candidates if c.startswith(word)]
    if len(starting) == 1:
        return starting[0]
    import difflib  # only on the way to an error or a warning
    near = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return near[0] if near else None


def _metavar(setting):
    name = setting.name
    if name in ("host", "port"):
        return name.upper()
    if name == "max_batch_delay":
        return "MS"
    if setting.kind is float:
        return "SECONDS"
    if name == "max_batch_size":
        return "REQUESTS"
    if name.endswith(("_size", "target", "_memory", "_input", "_output")):
        return "BYTES"
    if name.endswith(("file", "_certs")):
        return "FILE"
    return {"model_path": "PATH", "model_name": "NAME", "dispatch": "MODE", "log_level": "LEVEL",
            "ssl_keyfile_password": "PASSWORD", "ssl_cert_reqs": "MODE", "ssl_ciphers": "CIPHERS",
            "api_keys": "KEY", "log_format": "FORMAT", "cors_allow_origins": "ORIGINS"}.get(name, "N")


def _fail(prog, message):
    build_argparser(prog).error(message)


def parse_config(argv=None, prog="lite_serving"):
    """Flags in ``argv`` (default ``sys.argv[1:]``) over environment variables over defaults."""
    if argv is None:
        import sys
        argv = sys.argv[1:]
    given = _exact_flags(argv)
    if given is None:
        options = build_argparser(prog).parse_args(argv)
        given = {s.name: tuple(value) if s.many else value for s in SETTINGS
                 if (value := getattr(options, s.name)) is not None}
    values = {}
    environ = os.environ
    for s in SETTINGS:
        if s.name in given:
            values[s.name] = given[s.name]
            continue
        raw = environ.get(s.env)
        if raw is None or raw == "":
            continue
        try:
            values[s.name] = _convert(s, raw)
        except ValueError:
            _fail(prog, f"{s.env} must be {KIND_NAMES[s.kind]}, got {raw!r}")
    try:
        values.setdefault("port", default_port())
    except ConfigError as exc:
        _fail(prog, str(exc))
    base = launch_directory or os.getcwd()
    for name in PATHS:
        if values.get(name):
            values[name] = os.path.normpath(os.path.join(base, os.path.expanduser(values[name])))
    if "cors_allow_origins" in values:  # "a,b" in a flag as in the variable
        values["cors_allow_origins"] = tuple(
            o.strip() for item in values["cors_allow_origins"] for o in item.split(",") if o.strip())
    values.setdefault("model_path", default_model_path())
    config = Config(**values)
    if config.log_format not in LOG_FORMATS:
        _fail(prog, f"--log-format must be text or json, got {config.log_format!r}")
    if config.threads < 0 or config.workers < 1:
        _fail(prog, "--threads must be >= 0 and --workers >= 1")
    if config.dispatch not in ("auto", "threads", "inline"):
        _fail(prog, "--dispatch must be auto, threads or inline")
    if not 0 <= config.port <= 65535:
        _fail(prog, f"--port must be between 0 and 65535, got {config.port}")
    if config.max_batch_size < 1 or config.max_batch_delay < 0:
        _fail(prog, "--max-batch-size must be >= 1 and --max-batch-delay >= 0")
    if config.max_memory < config.max_body_size:
        _fail(prog, f"--max-memory ({config.max_memory}) must be at least --max-body-size "
                    f"({config.max_body_size})")
    if config.predict_timeout < 0 or config.worker_timeout <= 0 or config.worker_start_timeout <= 0:
        _fail(prog, "--predict-timeout must be >= 0, --worker-timeout and --worker-start-timeout > 0")
    if config.max_pending_input < 1 or config.max_pending_output < 1:
        _fail(prog, "--max-pending-input and --max-pending-output must be positive")
    _check_tls(config, prog)
    return config


def unknown_variables(environ=None):
    """A warning for each ``LITE_SERVING_*`` variable that is no setting, naming the closest one."""
    environ = os.environ if environ is None else environ
    known = {s.env for s in SETTINGS}
    unknown = [name for name in environ if name.startswith("LITE_SERVING_")
               and name not in known and name not in OTHER_VARIABLES]
    warnings = []
    for name in sorted(unknown):
        near = _closest(name, sorted(known) + list(OTHER_VARIABLES))
        hint = f"; did you mean {near}?" if near else "; `lite-serving --help` lists the variables"
        warnings.append(f"environment variable {name} is not a lite_serving setting and is "
                        f"ignored{hint}")
    return warnings


def _check_tls(config, prog):
    """The TLS settings that only make sense together."""
    if config.ssl_cert_reqs not in CERT_REQS:
        _fail(prog, f"--ssl-cert-reqs must be one of {', '.join(CERT_REQS)}")
    if not config.ssl_certfile:
        given = [flag for flag, value in (("--ssl-keyfile", config.ssl_keyfile),
                                          ("--ssl-ca-certs", config.ssl_ca_certs),
                                          ("--ssl-ciphers", config.ssl_ciphers)) if value]
        if config.ssl_cert_reqs != "none":
            given.append("--ssl-cert-reqs")
        if given:
            _fail(prog, f"{', '.join(given)} need --ssl-certfile: TLS is on only with a "
                        "certificate")
    elif config.ssl_cert_reqs != "none" and not config.ssl_ca_certs:
        _fail(prog, f"--ssl-cert-reqs {config.ssl_cert_reqs} needs --ssl-ca-certs, the CAs that "
                    "sign the client certificates")
