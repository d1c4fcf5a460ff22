"""Argument providers and the signature map built from them once at start-up.

``predict``'s parameters are matched to providers by name, or by annotation
when the annotation names a provider (``def predict(self, body: "json")``).
Each provider is a function of the :class:`~lite_serving.predictor.request_view.RequestView`,
so per request only the arguments the predictor asked for are computed.
"""

from lite_serving.errors import StartupError
from lite_serving.predictor.body_decoder import decode_json_argument, decode_payload
from lite_serving.predictor.signature import EMPTY, parameters


def provide_data(view):
    return view.raw_body()


def provide_params(view):
    return view.params


def provide_headers(view):
    return view.headers


def provide_request(view):
    from lite_serving.predictor.flask_request import Request
    return Request(view)


PREDICT_PROVIDERS = {
    "json": decode_json_argument,
    "payload": decode_payload,
    "data": provide_data,
    "params": provide_params,
    "args": provide_params,
    "headers": provide_headers,
    "request": provide_request,
}

PROVIDER_DESCRIPTIONS = {
    "json": "body decoded from JSON/MessagePack, 400 otherwise",
    "payload": "body decoded from JSON/MessagePack, raw bytes otherwise",
    "data": "raw body bytes",
    "params": "query string multi-dict",
    "args": "query string multi-dict",
    "headers": "case-insensitive headers",
    "request": "Flask-compatible request",
}


def provider_key(param, providers):
    """The provider a parameter asks for: its annotation when that names one, else its name."""
    ann = param.annotation
    if isinstance(ann, str) and ann in providers:
        return ann
    if ann is not EMPTY and not isinstance(ann, str):
        key = getattr(ann, "__lite_serving_provider__", None)
        if key in providers:
            return key
    return param.name


def signature_plan(func, providers, what, skip_first=False):
    """[(parameter name, provider key, is keyword-only)] for ``func``, or StartupError.

    ``*args``/``**kwargs`` get nothing; an unknown parameter with a default keeps
    its default; an unknown one without a default stops start-up. ``skip_first``:
    ``func`` is a method read from its class, whose first parameter is ``self``.
    """
    try:
        params = parameters(func, skip_first)
    except (TypeError, ValueError) as exc:
        raise StartupError(f"cannot read the signature of {what}: {exc}") from None
    plan = []
    by_keyword = False  # after a skipped parameter, pass the rest by name
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        key = provider_key(param, providers)
        if key not in providers:
            if param.default is not param.empty:
                by_keyword = True
                continue
            raise StartupError(
                f"{what} asks for `{param.name}`, which lite_serving cannot provide; "
                f"supported parameters: {', '.join(providers)}")
        if param.kind == param.POSITIONAL_ONLY and by_keyword:
            raise StartupError(f"{what}: positional-only `{param.name}` follows a parameter "
                               "lite_serving leaves to its default")
        plan.append((param.name, key, by_keyword or param.kind == param.KEYWORD_ONLY))
    return plan


def build_caller(predict, plan):
    """A function ``call(view)`` that computes the planned arguments and calls ``predict``."""
    positional = [PREDICT_PROVIDERS[key] for _, key, kw_only in plan if not kw_only]
    keyword = [(name, PREDICT_PROVIDERS[key]) for name, key, kw_only in plan if kw_only]
    if not keyword:
        if not positional:
            return lambda view: predict()
        if len(positional) == 1:
            first, = positional
            return lambda view: predict(first(view))
        if len(positional) == 2:
            first, second = positional
            return lambda view: predict(first(view), second(view))
        return lambda view: predict(*[f(view) for f in positional])
    return lambda view: predict(*[f(view) for f in positional],
                                **{name: f(view) for name, f in keyword})


class BatchCaller:
    """Calls ``predict_batch`` for a batch of requests, each planned argument as a list.

    The same providers as ``predict``'s give one value per request
    (:meth:`arguments`, where a body that cannot be decoded raises its
    ``ServingError``); :meth:`call` hands ``predict_batch`` the columns.
    """

    def __init__(self, predict_batch, plan, is_async=False):
        self.function = predict_batch
        self.plan = plan
        self.is_async = is_async  # an async def, which ``predict_batch`` runs on the asyncio loop
        ordered = [entry for entry in plan if not entry[2]] + [entry for entry in plan if entry[2]]
        self.providers = [PREDICT_PROVIDERS[key] for _, key, _ in ordered]
        self.positional = sum(1 for entry in plan if not entry[2])
        self.keywords = [name for name, _, kw_only in ordered if kw_only]

    def arguments(self, view):
        """This request's values of the planned arguments, in call order."""
        return [provide(view) for provide in self.providers]

    def call(self, rows):
        """``predict_batch`` with, for each argument, the list of the rows' values."""
        columns = [list(column) for column in zip(*rows)] if self.providers else []
        n = self.positional
        return self.function(*columns[:n], **dict(zip(self.keywords, columns[n:])))
