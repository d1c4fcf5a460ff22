"""``run(Predictor)``: the lifecycle of a serving process.

Start-up, in the order it happens and is logged:

1. settings and logging;
2. load the TLS certificates and API keys, and bind the port, so that a file
   that cannot be used or a port already taken fails at once, before a model
   loads; but do not listen yet: until the predictor is built the port
   refuses connections, as openbayes-serving's does, so no TCP or ``GET /``
   probe sends traffic to a process that cannot answer it (``--listen-early``
   listens at once and answers 503 meanwhile);
3. build the predictor on the main thread (SIGTERM/SIGINT stop it at once:
   nothing is served yet);
4. listen and start the I/O loop; log the ready line;
5. serve until SIGTERM/SIGINT, then drain and exit 0.

With ``--workers N`` a supervisor binds the port and forks N processes that
each do 2–5 on that one socket (see ``supervisor``); with ``--reload`` a
parent process runs the whole command in a child and starts it again when a
file changes. SIGHUP never ends a server: in a single process it reloads the
certificates and the API key file, from step 2 on, open connections staying
(and says so, or that there is nothing to reload); under ``--workers`` the
supervisor also replaces the workers one at a time with new ones.
"""

import os
import socket
import sys
import threading
import time

from lite_serving.app.routes import Application
from lite_serving.errors import StartupError
from lite_serving.http.parser import PARSER_NAME
from lite_serving.predictor.loader import (
    class_name,
    describe_init,
    describe_predict,
    load_predictor,
    start_run_thread,
)
from lite_serving.process import config as config_module
from lite_serving.process import logs
from lite_serving.process.config import parse_config

log = logs.get_logger("lite_serving")

# served: run() was called; cwd/argv/prog: how __main__ was started (for --reload's child and
# for messages that name the command as typed); beat: this worker's heartbeat.Beat under
# --workers (a start-up failure is written there)
state = {"served": False, "cwd": None, "argv": None, "prog": None, "beat": None}

BACKLOG = 2048
RELOADER_ENV = "LITE_SERVING_RELOADER_PID"   # set for the child of a --reload parent
WORKER_ENV = "LITE_SERVING_WORKER"          # set for a worker a supervisor starts from the command


def setup_logging(config):
    """lite_serving's loggers at ``--log-level``, written where the application's logging says.

    An application that configured logging before ``run()`` (handlers on the
    ``lite_serving`` logger, or on the root logger as ``logging.basicConfig``
    puts them) gets lite_serving's records through its own handlers and
    format; otherwise lite_serving writes them to stderr in its own format
    (see ``logs``: without importing ``logging`` while nobody else has).
    """
    logs.setup(logs.level_named(config.log_level), config.access_log, config.log_format)


def raise_open_files_limit():
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def bind(host, port, listen=True, reuse_port=False):
    """A socket bound with SO_REUSEADDR (IPv6 for IPv6 addresses), and SO_REUSEPORT when asked
    (``--reuse-port``: other processes may then bind the same port; by default that fails).

    ``listen=False``: bound only. The port is then reserved but a connection to it is refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                           "choose another address with --host/--port") from None
    if listen:
        sock.listen(BACKLOG)
    return sock


def address_text(sock, scheme="http"):
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def load_security(config):
    """``(Certificates or None, APIKeys or None)`` from the settings; StartupError naming a bad file.

    ``ssl`` and ``hmac`` are imported only when asked for: they would add milliseconds to
    every start-up.
    """
    certificates = keys = None
    if config.ssl_certfile:
        from lite_serving.server.tls import Certificates
        certificates = Certificates(config)
    if config.api_keys or config.api_key_file:
        from lite_serving.server.auth import APIKeys
        keys = APIKeys(config.api_keys, config.api_key_file, config.protect_metrics)
    return certificates, keys


def install_reload(parts, current_loop, in_worker=False):
    """SIGHUP reloads certificates and key files: on the I/O thread once it runs (``current_loop()``
    is then the IOLoop; connections stay open), at once while the predictor is built. With
    nothing to reload it says so (a worker of ``--workers`` says nothing: its supervisor
    replaces it). SIGHUP's default action, ending the process, never applies."""
    import signal

    # keys given as flags have nothing to reload: only the key file does
    parts = [part for part in parts if part is not None and getattr(part, "key_file", True)]

    def reload():
        if parts:
            for part in parts:
                part.reload()
        elif not in_worker:
            log.info("SIGHUP: nothing to reload (no --ssl-certfile or --api-key-file); to serve "
                     "a changed predictor.py, restart the server, or run it with --workers, "
                     "whose SIGHUP replaces the workers one at a time")

    def on_hangup(_signum, _frame):
        loop = current_loop()
        if loop is None:
            reload()
        else:
            loop.call_soon(reload)

    signal.signal(signal.SIGHUP, on_hangup)


def model_name(config):
    """``--model-name``, else the model file's name without ``.onnx``."""
    if config.model_name:
        return config.model_name
    from lite_serving.predictor.onnx_model import find_model
    return os.path.splitext(os.path.basename(find_model(config.model_path)))[0]


def fail(message):
    log.error("%s", message)
    if state["beat"] is not None:
        state["beat"].failed(message)
    sys.stderr.flush()
    sys.exit(1)


class IOLoop:
    """The server behind one seam: its I/O loop on a thread of its own, its predict pool.

    The only place that knows the server's classes.
    """

    def __init__(self, app, config, listener, certificates=None, keys=None, beat=None):
        from lite_serving.server.listener import Server
        self.server = Server(app, config, [listener])
        self.server.heartbeat = beat
        if certificates is not None:
            from lite_serving.server.tls import TLSAcceptor
            self.server.tls = TLSAcceptor(self.server, certificates)
        if keys is not None:
            self.server.ctx.admit = keys.check
        threading.Thread(target=self.server.serve_forever, name="lite_serving-io",
                         daemon=True).start()

    def call_soon(self, fn):
        """Run ``fn()`` on the I/O thread at its next turn (from any thread or signal handler)."""
        self.server.loop.call_soon_threadsafe(fn)

    def describe_dispatch(self):
        """How predict is run, in words and in full."""
        return self.server.dispatch.describe()

    def summarize_dispatch(self):
        """How predict is run, in a few words, for the ready line."""
        return self.server.dispatch.summary()

    def install_signal_handlers(self):
        """SIGTERM/SIGINT drain the server (graceful shutdown)."""
        self.server.install_signal_handlers()

    def wait(self):
        """Until the loop has stopped and drained; or, when a stop was asked for and the loop has
        not finished by ``--graceful-timeout`` (+1 s), until then: with ``--dispatch inline`` a
        predict that never returns holds the loop, and only this thread can keep the deadline."""
        server = self.server
        while not server.finished.wait(0.25):
            if server.stop_overdue(time.monotonic()):
                log.error("a predict still holds the I/O thread %g s after the stop was asked "
                          "for (--graceful-timeout): stopping without waiting for it",
                          server.config.graceful_timeout)
                break
        server.close()


class StopRequested(BaseException):
    """SIGTERM/SIGINT while the predictor is built; a BaseException so ``except Exception`` lets it by."""


_stop = {"asked": False}


def _stop_while_building(signum, _frame):
    _stop["asked"] = True
    raise StopRequested(signum)


def _catch_stop_signals():
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_while_building)


def run(predictor_cls, argv=None):
    """Serve ``predictor_cls`` until SIGTERM/SIGINT; the entry point predictor.py files call."""
    state["served"] = True
    import signal
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # until the handler of this process is installed
    prog = state["prog"] or "python " + (os.path.basename(sys.argv[0]) or "predictor.py")
    config = parse_config(argv, prog=prog)
    setup_logging(config)
    log_start(config)
    if is_reload_child():
        from lite_serving.process.supervisor import die_with_parent
        die_with_parent()
    elif config.reload:
        sys.exit(_reload(config, os.path.dirname(os.path.abspath(sys.argv[0])), launch_command()))
    raise_open_files_limit()
    worker = os.environ.pop(WORKER_ENV, None)
    if worker is not None:   # started by a supervisor's reload, from the command
        sys.exit(serve_exec_worker(predictor_cls, config, worker))
    if config.workers == 1:
        return serve_one(predictor_cls, config)
    try:
        load_security(config)  # once here: a bad file is one error, not a worker crash loop
    except StartupError as exc:
        fail(str(exc))
    # Bound, not listening (the port refuses until a worker is ready), and shared by every
    # worker: one accept queue, --port 0 the same port for all, a port in use fails here.
    try:
        listener = bind(config.host, config.port, listen=False, reuse_port=config.reuse_port)
    except StartupError as exc:
        fail(str(exc))
    config.port = listener.getsockname()[1]
    from lite_serving.process.supervisor import Supervisor
    status = Supervisor(config.workers,
                        lambda beat: serve_one(predictor_cls, config, listener, beat),
                        config, listener, launch_command(), state["cwd"] or os.getcwd()).run()
    sys.exit(status)


def serve_exec_worker(predictor_cls, config, spec):
    """A worker started by exec (``LITE_SERVING_WORKER``: its socket, board record, supervisor)."""
    listen_fd, board_fd, record, slot, supervisor = (int(part) for part in spec.split(","))
    if os.getppid() != supervisor:
        fail(f"{WORKER_ENV} names supervisor pid {supervisor}, which is not this process's parent")
    from lite_serving.process.heartbeat import Beat
    from lite_serving.process.supervisor import die_with_parent
    die_with_parent()
    beat = Beat.attach(board_fd, record)
    listener = socket.socket(fileno=listen_fd)
    listener.set_inheritable(False)   # processes the predictor starts must not hold the port
    try:
        return serve_one(predictor_cls, config, listener, beat)
    except BaseException as exc:
        if not isinstance(exc, SystemExit):
            beat.failed(f"{type(exc).__name__}: {exc}")
        raise


def log_start(config):
    """The first lines: version and what is served, then what an operator must know
    (development mode, unknown variables); the implementations in use at debug level."""
    from lite_serving import __version__  # the package imports this module: not at module level
    log.info("lite_serving %s on Python %s, pid %d, serving %s", __version__,
             sys.version.split()[0], os.getpid(), os.path.dirname(os.path.abspath(sys.argv[0])))
    log.debug("parser: %s", PARSER_NAME)
    alias = sys.modules.get("lite_serving_alias")
    if alias is not None and alias.shadowed:
        log.info("openbayes_serving is served by lite_serving; the installed openbayes-serving %s "
                 "is not used", alias.shadowed)
    for warning in config_module.unknown_variables():
        log.warning("%s", warning)
    if config.dev and config.production:
        log.warning("--dev is ignored in production: failed requests answer without a traceback")
    elif config.dev_page:
        log.warning("development mode (--dev): a failing predict answers clients on this machine "
                    "with its traceback and source lines; never use it behind a proxy")


def serve_one(predictor_cls, config, listener=None, beat=None):
    """Bind, build the predictor, listen, serve until stopped; returns the exit status.

    Under ``--workers``: ``listener`` is the socket the supervisor bound, and ``beat`` this
    worker's record, which says when it is ready and, each tick, that its loop turns.
    """
    config_module.active = config
    state["beat"] = beat
    started = time.perf_counter()
    try:
        certificates, keys = load_security(config)
        if listener is None:
            listener = bind(config.host, config.port, listen=False, reuse_port=config.reuse_port)
    except StartupError as exc:
        fail(str(exc))
    address = address_text(listener, "https" if certificates is not None else "http")
    if keys is not None:
        log.info("API keys required on every route but the probes%s",
                 "" if config.protect_metrics else " and /metrics")
    name = class_name(predictor_cls)
    app = Application(config)
    if beat is not None:   # one /metrics for the whole server: this worker's row of the board
        figures = beat.shared_figures()
        if figures is not None:
            app.metrics.share(figures, beat.index)
        else:
            log.warning("this worker's /metrics cannot be added to the other workers' (another "
                        "version of lite_serving started them): it reports itself only")
    loop = None
    _catch_stop_signals()
    install_reload((certificates, keys), lambda: loop, in_worker=beat is not None)
    try:
        if config.listen_early:
            listener.listen(BACKLOG)
            loop = IOLoop(app, config, listener, certificates, keys, beat)
            log.info("listening on %s while %s is built (--listen-early): /healthz and /readyz "
                     "answer, GET / and POST / answer 503 until it is ready", address, name)
        else:
            log.info("building %s; %s is bound and takes connections once it is built", name,
                     address.partition("://")[2])
        loaded = build(predictor_cls, config, name)
        if _stop["asked"]:  # the predictor's own code swallowed StopRequested
            raise StopRequested
        attach_predictor(app, loaded, config)
        if loop is None:
            listener.listen(BACKLOG)
            loop = IOLoop(app, config, listener, certificates, keys, beat)
            log.info("listening on %s", address)
        else:
            loop.server.predictor_ready()
        loop.install_signal_handlers()
        if beat is not None:
            beat.ready(time.monotonic())
    except StopRequested:
        log.info("stopped before the predictor was ready")
        return 0
    start_run_thread(loaded.instance, config.production)
    v2 = f" and /v2/models/{app.v2_model.name}/infer" if app.v2_model is not None else ""
    log.info("ready in %.0f ms: %s answers POST %s/%s (%s)", (time.perf_counter() - started) * 1000,
             name, address, v2, loop.summarize_dispatch())
    log.debug("how predict runs: %s", loop.describe_dispatch())
    loop.wait()
    log.info("stopped")
    return 0


def attach_predictor(app, loaded, config):
    """Give ``app`` the built predictor: its callers, its ONNX model on /v2, its batching; the
    application is then ready."""
    if loaded.onnx_session is not None:
        from lite_serving.v2.model import V2Model
        served_as = model_name(config)
        app.v2_model = V2Model(loaded.onnx_session, served_as)
        log.info("Open Inference Protocol (v2) routes serve the model as %r: /v2/models/%s",
                 served_as, served_as)
    app.caller = loaded.caller
    app.async_predict = loaded.is_async
    app.predictor = loaded
    configure_batching(app, loaded, config)
    app.ready = True


def configure_batching(app, loaded, config):
    """Which requests are answered in batches: POST / when the class has ``predict_batch``
    (unless ``--max-batch-size 1`` and it has ``predict`` too), /v2 inference when the ONNX
    model's first dimension is dynamic (unless ``--max-batch-size 1``)."""
    size = config.max_batch_size
    if loaded.batch_caller is not None and (size > 1 or loaded.caller is None):
        app.batch_caller = loaded.batch_caller
    model = app.v2_model
    if model is not None and size > 1:
        if model.batchable:
            app.v2_batching = True
        else:
            log.info("/v2 inference requests run one by one: the model's first dimension is fixed")


def build(predictor_cls, config, name):
    """The built predictor; a failure logs why and exits 1 at once (nothing is served yet)."""
    try:
        loaded = load_predictor(predictor_cls, config)
    except StartupError as exc:
        fail(str(exc))
    except Exception as exc:
        log.exception("%s could not be built", name)
        if state["beat"] is not None:
            from lite_serving.errors import describe_exception
            state["beat"].failed(f"{name} could not be built: {describe_exception(exc)}")
        sys.exit(1)
    log.info("__init__ got: %s", describe_init(loaded.init_plan, config))
    if loaded.caller is not None:
        log.info("%spredict gets: %s", "async " if loaded.is_async else "",
                 describe_predict(loaded.predict_plan))
    if loaded.batch_caller is not None:
        log.info("%spredict_batch gets, as lists with one entry per request: %s",
                 "async " if loaded.batch_caller.is_async else "",
                 describe_predict(loaded.batch_caller.plan))
    return loaded


# -- --reload -----------------------------------------------------------------------

def is_reload_child():
    """True in the serving child of a ``--reload`` parent (which must not reload again)."""
    return os.environ.get(RELOADER_ENV) == str(os.getppid())


def reload_requested(flags):
    """For ``__main__``: does this command ask for ``--reload`` (and is not the reloaded child)?"""
    if is_reload_child():
        return False
    if not (os.environ.get(config_module.env_name("reload")) or any(a.startswith("--re") for a in flags)):
        return False
    return parse_config(flags, prog=state["prog"] or "lite-serving").reload


def launch_command():
    """The command that started this process, to run it again in a child."""
    orig = getattr(sys, "orig_argv", None)
    if orig:
        return [sys.executable, *orig[1:]]
    if state["argv"] is not None:
        return [sys.executable, "-m", "lite_serving", *state["argv"]]
    return [sys.executable, *sys.argv]


def reload_directory(directory, flags):
    """``lite-serving DIR --reload``: reload without importing the predictor in this process."""
    config = parse_config(flags, prog=state["prog"] or "lite-serving")
    setup_logging(config)
    log_start(config)
    return _reload(config, directory, launch_command())


def _reload(config, directory, command):
    from lite_serving.process.reloader import Reloader
    env = dict(os.environ, **{RELOADER_ENV: str(os.getpid())})
    return Reloader(command, state["cwd"] or os.getcwd(), env, directory, config.graceful_timeout).run()
