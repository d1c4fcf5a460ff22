"""Building the predictor: ``__init__``'s arguments, ``predict``'s signature map, its ``run`` thread."""

import os
import sys
import threading
import time
import types

from lite_serving.errors import StartupError
from lite_serving.predictor.providers import (
    PREDICT_PROVIDERS,
    PROVIDER_DESCRIPTIONS,
    BatchCaller,
    build_caller,
    provider_key,
    signature_plan,
)
from lite_serving.predictor.signature import async_kind, parameters
from lite_serving.process.logs import get_logger

log = get_logger("lite_serving")


def provide_onnx(config):
    from lite_serving.predictor.onnx_model import load_session  # only predictors that ask for it
    return load_session(config.model_path, config.intra_op_threads, config.inter_op_threads)


INIT_PROVIDERS = {"onnx": provide_onnx}


class LoadedPredictor:
    """The built predictor object and the functions that call its ``predict``/``predict_batch``.

    ``caller(view)`` runs ``predict`` for one request (None when the class has
    only ``predict_batch``); ``batch_caller`` (a
    :class:`~lite_serving.predictor.providers.BatchCaller`, or None) runs ``predict_batch``
    for a list of requests.
    """

    def __init__(self, instance, caller, init_plan, predict_plan, onnx_session=None,
                 batch_caller=None, is_async=False):
        self.instance = instance
        self.is_async = is_async            # predict is ``async def``: caller returns a coroutine
        self.caller = caller
        self.init_plan = init_plan
        self.predict_plan = predict_plan
        self.onnx_session = onnx_session   # the session given to __init__, served on /v2 too
        self.batch_caller = batch_caller


def class_name(cls):
    """``Predictor (predictor.py)`` for the log and error messages."""
    name = getattr(cls, "__qualname__", repr(cls))
    source = _source_file(cls)
    if source:
        rel = os.path.relpath(source)
        return f"{name} ({source if rel.startswith('..') else rel})"
    return f"{getattr(cls, '__module__', '?')}.{name}"


def _source_file(cls):
    """The .py file defining ``cls`` (``inspect.getsourcefile``), or None."""
    module = sys.modules.get(getattr(cls, "__module__", None))
    source = getattr(module, "__file__", None)
    if isinstance(cls, type) and isinstance(source, str) and source.endswith(".py") \
            and os.path.exists(source):
        return source
    import inspect  # anything else: inspect's rules
    try:
        return inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None


def _static(cls, name):
    """``inspect.getattr_static(cls, name, None)`` for a class: its attribute, descriptors untouched."""
    if type(cls) is type:
        for base in cls.__mro__:
            if name in base.__dict__:
                return base.__dict__[name]
        return None
    import inspect
    return inspect.getattr_static(cls, name, None)


def defines(cls, method):
    """Whether ``cls`` has a callable ``method`` (``predict`` or ``predict_batch``).

    An instance may set the attribute to None to do without it (the zero-code
    ONNX predictor does so for models that cannot be batched).
    """
    return _static(cls, method) is not None and callable(getattr(cls, method, None))


def _unbound(cls, method):
    """``(function, skip_first)``: ``method`` as the class defines it, and whether its first
    parameter is ``self`` (left out), to check it before building."""
    attr = _static(cls, method)
    if isinstance(attr, staticmethod):
        return attr.__func__, False
    func = getattr(cls, method)
    return func, not (isinstance(attr, classmethod) or isinstance(func, types.MethodType))


def describe_init(plan, config):
    if not plan:
        return "nothing"
    parts = []
    for name, key, _ in plan:
        if key == "onnx":
            from lite_serving.predictor.onnx_model import find_model
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
        param = next((p for p in parameters(cls) if p.name == "config"), None)
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
    methods = [m for m in ("predict", "predict_batch") if defines(cls, m)]
    if not methods:
        raise StartupError(f"{name} has no `predict` method; a predictor class needs "
                           "`def predict(self, json)` (or other supported arguments), or "
                           "`def predict_batch(self, json)` to be given requests in batches")
    # Check the signatures first, so a bad one fails before a large model loads.
    for method in methods:
        func, skip_self = _unbound(cls, method)
        signature_plan(func, PREDICT_PROVIDERS, f"{name}.{method}", skip_self)
        if async_kind(func) == "generator":
            raise StartupError(
                f"{name}.{method} is an async generator (async def with yield); make it an async "
                "def that returns serv.Response(gen()) or serv.event_stream(gen()), gen being "
                "the async generator, to stream its pieces")
    _refuse_old_config(cls, name)
    for attribute in ("input_schema", "output_schema"):  # described by /openapi.json
        value = getattr(cls, attribute, None)
        if value is not None and not isinstance(value, dict):
            raise StartupError(f"{name}.{attribute} is {type(value).__name__}; it must be a JSON "
                               "Schema as a dict, e.g. {\"type\": \"object\"}")
    init_plan = signature_plan(cls, INIT_PROVIDERS, f"{name}.__init__")
    kwargs = {pname: INIT_PROVIDERS[key](config) for pname, key, _ in init_plan}
    instance = cls(**kwargs)
    plans = {}
    for method in methods:
        bound = getattr(instance, method, None)
        if bound is None and len(methods) > 1:
            continue  # set to None by the instance: the other method serves
        if not callable(bound):
            raise StartupError(f"{name} has no `{method}` method")
        plans[method] = (bound, signature_plan(bound, PREDICT_PROVIDERS, f"{name}.{method}"))
    run_async_setup(instance, name)
    is_async = "predict" in plans and async_kind(plans["predict"][0]) == "coroutine"
    caller = build_caller(*plans["predict"]) if "predict" in plans else None
    batch_caller = None
    if "predict_batch" in plans:
        function, plan = plans["predict_batch"]
        batch_async = async_kind(function) == "coroutine"
        if batch_async:  # the batch thread waits for it on the loop
            from lite_serving.server.async_predict import run_on_loop
            function = run_on_loop(function)
        batch_caller = BatchCaller(function, plan, batch_async)
    session = next((kwargs[pname] for pname, key, _ in init_plan if key == "onnx"), None)
    plan = plans["predict" if "predict" in plans else "predict_batch"][1]
    return LoadedPredictor(instance, caller, init_plan, plan, session, batch_caller, is_async)


def run_async_setup(instance, name):
    """``async def setup(self)``, when the predictor has one: run on the asyncio loop thread that
    async predicts run on (so that what it makes, bound to that loop, serves them), before the
    server is ready. A ``setup`` that is not ``async def`` is the predictor's own business."""
    setup = getattr(instance, "setup", None)
    if setup is None or async_kind(setup) != "coroutine":
        return
    from lite_serving.server.async_predict import event_loop_thread
    began = time.perf_counter()
    event_loop_thread().run(setup())
    log.info("%s.setup() ran on the asyncio event loop in %.0f ms", name,
             (time.perf_counter() - began) * 1000)


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
