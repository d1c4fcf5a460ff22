"""``run(Predictor)``: the lifecycle of a serving process.

Parse settings, bind the port (early, so probes can be answered while a large
model loads), build the predictor on the main thread while the I/O loop
already runs, then serve until SIGTERM/SIGINT and shut down gracefully.
"""

import logging
import os
import socket
import sys
import threading
import time

from . import __version__
from .app import Application
from . import config as config_module
from .config import parse_config
from .errors import StartupError
from .loader import class_name, describe_init, describe_predict, load_predictor, start_run_thread
from .parser import PARSER_NAME
from .server import Server
from .supervisor import Supervisor

log = logging.getLogger("lite_serving")

state = {"served": False}


def setup_logging(config):
    """One stderr handler for lite_serving's loggers (left alone if the application set one up)."""
    level = getattr(logging, str(config.log_level).upper(), logging.INFO)
    logger = logging.getLogger("lite_serving")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
        handler.lite_serving_own = True  # the access log may write in this format itself
        logger.addHandler(handler)
        logger.propagate = False
    access = logging.getLogger("lite_serving.access")
    access.setLevel(logging.INFO if config.access_log else logging.WARNING)


def raise_open_files_limit():
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


def bind(host, port, listen=True):
    """A listening socket with SO_REUSEADDR and SO_REUSEPORT; IPv6 for IPv6 addresses."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                           "choose another address with --host/--port") from None
    if listen:
        sock.listen(2048)
    return sock


def address_text(sock):
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def model_name(config):
    """``--model-name``, else the model file's name without ``.onnx``."""
    if config.model_name:
        return config.model_name
    from .onnx_model import find_model
    return os.path.splitext(os.path.basename(find_model(config.model_path)))[0]


def fail(message):
    log.error("%s", message)
    sys.stderr.flush()
    sys.exit(1)


def run(predictor_cls, argv=None):
    """Serve ``predictor_cls`` until SIGTERM/SIGINT; the entry point predictor.py files call."""
    state["served"] = True
    config = parse_config(argv, prog=os.path.basename(sys.argv[0]) or "lite_serving")
    setup_logging(config)
    log.info("lite_serving %s on Python %s, pid %d", __version__, sys.version.split()[0], os.getpid())
    log.info("parser: %s", PARSER_NAME)
    raise_open_files_limit()
    if config.workers == 1:
        return serve_one(predictor_cls, config)
    # Reserve the port (bound, not listening: it takes no connections) so that
    # --port 0 gives every worker the same port.
    try:
        reserve = bind(config.host, config.port, listen=False)
    except StartupError as exc:
        fail(str(exc))
    config.port = reserve.getsockname()[1]
    status = Supervisor(config.workers, lambda: serve_one(predictor_cls, config),
                        config.graceful_timeout).run()
    reserve.close()
    sys.exit(status)


def serve_one(predictor_cls, config):
    """Bind, build the predictor while the loop already answers, serve until stopped."""
    config_module.active = config
    started = time.perf_counter()
    try:
        listener = bind(config.host, config.port)
    except StartupError as exc:
        fail(str(exc))
    address = address_text(listener)
    log.info("listening on %s", address)

    app = Application(config)
    server = Server(app, config, [listener])
    io_thread = threading.Thread(target=server.serve_forever, name="lite_serving-io", daemon=True)
    io_thread.start()
    server.install_signal_handlers()

    log.info("building %s", class_name(predictor_cls))
    try:
        loaded = load_predictor(predictor_cls, config)
    except StartupError as exc:
        server.request_stop()
        fail(str(exc))
    except Exception:
        server.request_stop()
        log.exception("%s could not be built", class_name(predictor_cls))
        sys.exit(1)
    if server.stopping:
        log.info("stopped before the predictor was ready")
        server.finished.wait(config.graceful_timeout + 5)
        return 0
    log.info("__init__ got: %s", describe_init(loaded.init_plan, config))
    log.info("predict gets: %s", describe_predict(loaded.predict_plan))
    if loaded.onnx_session is not None:
        from .v2 import V2Model
        name = model_name(config)
        app.v2_model = V2Model(loaded.onnx_session, name)
        log.info("Open Inference Protocol (v2) routes serve the model as %r: /v2/models/%s", name, name)
    app.caller = loaded.caller
    app.ready = True
    start_run_thread(loaded.instance, config.production)
    mode = server.describe_dispatch()
    log.info("ready in %.0f ms (%s): POST %s/ to predict", (time.perf_counter() - started) * 1000,
             mode, address)

    while not server.finished.wait(0.5):
        pass
    server.close()
    log.info("stopped")
    return 0
