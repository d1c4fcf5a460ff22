"""lite_serving: serve a predictor.py, fast, from a tiny install.

``import lite_serving as serv`` and ``serv.run(Predictor)``, exactly like the
``openbayes_serving`` package that predictor.py files are written for.
"""

__version__ = "0.1.0"

from lite_serving.errors import ServingError  # noqa: E402
from lite_serving.response import Response  # noqa: E402
from lite_serving.serve import run  # noqa: E402

__all__ = ["run", "emit_event", "event_stream", "ServingError", "Response", "__version__"]


def __getattr__(name):
    # imported on first use: most predictors never emit or stream events, and start-up pays
    # per module; once imported, the name is the module's own (no second call here)
    if name == "emit_event":
        from lite_serving.events import emit_event as value
    elif name == "event_stream":
        from lite_serving.predictor.sse import event_stream as value
    else:
        raise AttributeError(f"module 'lite_serving' has no attribute {name!r}")
    globals()[name] = value
    return value
