"""``lite_serving.predictor.signature.parameters`` gives what ``inspect.signature`` gives, for every shape.

Plain functions, bound methods and classes with a plain ``__init__`` are read
from their code objects (start-up then does without ``inspect``); every other
callable goes to ``inspect``. Either way the parameters must be inspect's,
since they decide which arguments ``predict`` and ``__init__`` receive.
"""

import functools
import inspect

import pytest

from lite_serving.predictor import signature
from lite_serving.predictor.signature import EMPTY, Param, parameters


def from_inspect(func, skip_first=False):
    params = [Param(p.name, int(p.kind), EMPTY if p.default is p.empty else p.default,
                    EMPTY if p.annotation is p.empty else p.annotation)
              for p in inspect.signature(func).parameters.values()]
    return params[1:] if skip_first else params


def f_none(): pass
def f_one(json): pass
def f_defaults(json, params=None, *, headers=3, request): pass
def f_posonly(a, b=1, /, c=2, *rest, d, e=5, **more): pass
def f_star(*args): pass
def f_kwargs(**kwargs): pass
def f_annotated(body: "json", n: int = 3, *, req: "request" = None) -> dict: pass  # noqa: F821
def f_kwonly_only(*, json): pass
def f_locals(json):
    x = 1
    y = [x]
    return y


class Plain:
    def __init__(self):
        pass

    def predict(self, json, headers=None):
        return json

    def predict_batch(self, json: "payload", *, params):  # noqa: F821
        return json

    def star(*args):
        pass

    @staticmethod
    def static(json):
        return json

    @classmethod
    def klass(cls, data):
        return data


class WithInit:
    def __init__(self, onnx, *, name="x", **rest):
        pass


class Child(WithInit):
    pass


class WithNew:
    def __new__(cls, a, b):
        return super().__new__(cls)


class Meta(type):
    def __call__(cls, z):
        return super().__call__()


class WithMeta(metaclass=Meta):
    def __init__(self, q):
        pass


class NoInit:
    pass


class Documented:
    """Documented(a, b)
--

A class whose docstring gives it a text signature."""


def decorator(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


@decorator
def decorated(json, data=None):
    pass


def with_signature(*args):
    pass


with_signature.__signature__ = inspect.Signature([inspect.Parameter("json", inspect.Parameter.POSITIONAL_OR_KEYWORD)])


class Callable:
    def __call__(self, json):
        return json


PLAIN_SHAPES = [f_none, f_one, f_defaults, f_posonly, f_star, f_kwargs, f_annotated, f_kwonly_only,
                f_locals, Plain().predict, Plain().predict_batch, Plain.klass, Plain().klass,
                Plain, WithInit, Child, Plain.static, lambda json, *, headers=None: json]
OTHER_SHAPES = [WithNew, WithMeta, NoInit, Documented, decorated, with_signature, Callable(),
                functools.partial(f_defaults, 1), Plain().star, len, dict, print]


@pytest.mark.parametrize("func", PLAIN_SHAPES + OTHER_SHAPES, ids=repr)
def test_the_parameters_are_inspects(func):
    try:
        expected = from_inspect(func)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            parameters(func)
        return
    assert parameters(func) == expected


@pytest.mark.parametrize("func", PLAIN_SHAPES, ids=repr)
def test_plain_shapes_are_read_without_inspect(func):
    assert signature._plain_parameters(func) == from_inspect(func)


@pytest.mark.parametrize("func", OTHER_SHAPES, ids=repr)
def test_other_shapes_go_to_inspect(func):
    assert signature._plain_parameters(func) is None


@pytest.mark.parametrize("func", [Plain.predict, Plain.predict_batch, f_posonly, f_one], ids=repr)
def test_skip_first_leaves_out_self(func):
    assert parameters(func, skip_first=True) == from_inspect(func, skip_first=True)


def test_defaults_are_the_very_objects():
    marker = object()

    def f(a=marker, *, b=marker):
        pass
    a, b = parameters(f)
    assert a.default is marker and b.default is marker and a.annotation is EMPTY


def test_postponed_annotations_stay_text():
    namespace = {}
    exec("from __future__ import annotations\ndef f(x: json, y: int = 1): pass", namespace)
    assert parameters(namespace["f"]) == from_inspect(namespace["f"])
    assert parameters(namespace["f"])[0].annotation == "json"
