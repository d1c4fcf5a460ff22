"""Building the predictor: ``__init__``'s arguments, ``predict``'s signature map, its ``run`` thread."""

import inspect
import logging
import os
import threading

from .errors import StartupError
from .onnx_model import find_model, load_session
from .providers import (PREDICT_PROVIDERS, PROVIDER_DESCRIPTIONS, build_caller, provider_key,
                        signature_plan)

log = logging.getLogger("lite_serving")


def provide_onnx(config):
    return load_session(config.model_path, config.intra_op_threads, config.inter_op_threads)


INIT_PROVIDERS = {"onnx": provide_onnx}


class LoadedPredictor:
    """The built predictor object and the function that calls its ``predict`` for a request."""

    def __init__(self, instance, caller, init_plan, predict_plan, onnx_session=None):
        self.instance = instance
        self.caller = caller
        self.init_plan = init_plan
        self.predict_plan = predict_plan
        self.onnx_session = onnx_session   # the session given to __init__, served on /v2 too


def class_name(cls):
    """``Predictor (predictor.py)`` for the log and error messages."""
    name = getattr(cls, "__qualname__", repr(cls))
    try:
        source = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        source = None
    if source:
        rel = os.path.relpath(source)
        return f"{name} ({source if rel.startswith('..') else rel})"
    return f"{getattr(cls, '__module__', '?')}.{name}"


def _unbound_predict(cls):
    """``predict`` as the class defines it, without ``self``, to check it before building."""
    attr = inspect.getattr_static(cls, "predict", None)
    if attr is None or not callable(getattr(cls, "predict", None)):
        raise StartupError(f"{class_name(cls)} has no `predict` method; a predictor class needs "
                           "`def predict(self, json)` (or other supported arguments)")
    if isinstance(attr, staticmethod):
        return attr.__func__
    func = getattr(cls, "predict")
    if isinstance(attr, classmethod) or inspect.ismethod(func):
        return func
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return func
    params = list(sig.parameters.values())[1:]

    def predict_without_self(*args, **kwargs):
        pass
    predict_without_self.__signature__ = sig.replace(parameters=params)
    return predict_without_self


def describe_init(plan, config):
    if not plan:
        return "nothing"
    parts = []
    for name, key, _ in plan:
        if key == "onnx":
            try:
                parts.append(f"{name} (onnxruntime session of {os.path.abspath(find_model(config.model_path))})")
            except StartupError:
                parts.append(name)
        else:
            parts.append(name)
    return ", ".join(parts)


def describe_predict(plan):
    if not plan:
        return "nothing"
    return ", ".join(f"{name} ({PROVIDER_DESCRIPTIONS[key]})" if name == key
                     else f"{name} as {key} ({PROVIDER_DESCRIPTIONS[key]})" for name, key, _ in plan)


def _refuse_old_config(cls, name):
    """``__init__(self, config)`` of older openbayes-serving versions: say what replaces it."""
    try:
        param = inspect.signature(cls).parameters.get("config")
    except (TypeError, ValueError):
        return
    if param is None or param.default is not param.empty or param.kind in (param.VAR_POSITIONAL,
                                                                            param.VAR_KEYWORD):
        return
    if provider_key(param, INIT_PROVIDERS) != "config":
        return
    raise StartupError(
        f"{name}.__init__ asks for `config`, the settings object of older openbayes-serving "
        "versions, which neither openbayes-serving 0.5 nor lite_serving provides: remove the "
        "parameter and calls such as config.limit_concurrency(N), and set predict concurrency "
        "with --threads N (or LITE_SERVING_THREADS) and other settings with the flags "
        "(lite-serving --help)")


def load_predictor(cls, config):
    """Build ``cls`` with the arguments its ``__init__`` asks for; map ``predict``'s arguments."""
    if not isinstance(cls, type) and not callable(cls):
        raise StartupError(f"run() needs a predictor class, got {cls!r}")
    name = class_name(cls)
    # Check predict first, so a bad signature fails before a large model loads.
    signature_plan(_unbound_predict(cls), PREDICT_PROVIDERS, f"{name}.predict")
    _refuse_old_config(cls, name)
    init_plan = signature_plan(cls, INIT_PROVIDERS, f"{name}.__init__")
    kwargs = {pname: INIT_PROVIDERS[key](config) for pname, key, _ in init_plan}
    instance = cls(**kwargs)
    predict = getattr(instance, "predict", None)
    if not callable(predict):
        raise StartupError(f"{name} has no `predict` method")
    predict_plan = signature_plan(predict, PREDICT_PROVIDERS, f"{name}.predict")
    session = next((kwargs[pname] for pname, key, _ in init_plan if key == "onnx"), None)
    return LoadedPredictor(instance, build_caller(predict, predict_plan), init_plan, predict_plan,
                           session)


def start_run_thread(instance, production):
    """Start the predictor's ``run()`` in a daemon thread, if it has one."""
    daemon = getattr(instance, "run", None)
    if not callable(daemon):
        return None

    def target():
        try:
            daemon()
        except BaseException:
            log.exception("the predictor's run() raised")
            if production:
                log.error("exiting with status 1 so that the platform restarts the service")
                os._exit(1)
            return
        log.info("the predictor's run() returned")

    thread = threading.Thread(target=target, name="predictor-run", daemon=True)
    thread.start()
    log.info("started %s.run() in a background thread", type(instance).__name__)
    return thread
