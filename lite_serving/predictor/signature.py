"""The parameters of ``predict``, ``predict_batch`` and ``__init__``, as ``inspect.signature`` gives them.

``inspect`` imports ast, dis, tokenize and more: a few milliseconds of every
start-up. Plain Python functions, the methods bound to them and classes whose
``__init__`` is one (the shape of nearly every predictor) are read here from
their code objects; anything else (a ``__signature__`` or ``__wrapped__``, a
``__new__``, a metaclass, a builtin, a partial...) is left to ``inspect``,
imported then. Both give the same list of :class:`Param`.
"""

import types

EMPTY = type("Empty", (), {"__repr__": lambda self: "EMPTY", "__slots__": ()})()

_VARARGS, _VARKEYWORDS = 0x04, 0x08   # co_flags
_COROUTINE, _ASYNC_GENERATOR = 0x80, 0x200


class Param:
    """One parameter: ``name``, ``kind`` (numbered as ``inspect.Parameter``'s kinds),
    ``default`` and ``annotation`` (``EMPTY`` when there is none)."""

    __slots__ = ("name", "kind", "default", "annotation")

    POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD, VAR_POSITIONAL, KEYWORD_ONLY, VAR_KEYWORD = range(5)
    empty = EMPTY

    def __init__(self, name, kind, default=EMPTY, annotation=EMPTY):
        self.name = name
        self.kind = kind
        self.default = default
        self.annotation = annotation

    def __eq__(self, other):
        return (isinstance(other, Param) and (self.name, self.kind, self.annotation) ==
                (other.name, other.kind, other.annotation) and _same(self.default, other.default))

    def __repr__(self):
        return f"Param({self.name!r}, {self.kind}, {self.default!r}, {self.annotation!r})"


def _same(a, b):
    return a is b or (type(a) is type(b) and a == b)


def parameters(func, skip_first=False):
    """``func``'s parameters in ``inspect.signature`` order; ``skip_first`` leaves out the first
    (an unbound method's ``self``). Raises TypeError/ValueError where ``inspect`` does."""
    params = _plain_parameters(func)
    if params is None:
        import inspect
        params = [Param(p.name, int(p.kind), EMPTY if p.default is p.empty else p.default,
                        EMPTY if p.annotation is p.empty else p.annotation)
                  for p in inspect.signature(func).parameters.values()]
    return params[1:] if skip_first else params


def _plain_parameters(func):
    """The parameters read from the code object, or None when ``inspect`` must decide."""
    kind = type(func)
    if kind is types.FunctionType:
        return _of_function(func)
    if kind is types.MethodType:
        return _bound(_of_function(func.__func__))
    if kind is type:   # a class whose metaclass is type: its __init__, without self
        if getattr(func, "__signature__", None) is not None or hasattr(func, "__wrapped__"):
            return None
        for base in func.__mro__[:-1]:
            own = base.__dict__
            if "__new__" in own:
                return None
            if "__init__" in own:
                return _bound(_of_function(own["__init__"]))
    return None


def _bound(params):
    """A function's parameters once bound to an object: without the first positional one."""
    if not params or params[0].kind > Param.POSITIONAL_OR_KEYWORD:
        return None   # *args first, or nothing to bind: inspect's rules
    return params[1:]


def _of_function(func):
    if (type(func) is not types.FunctionType or getattr(func, "__signature__", None) is not None
            or hasattr(func, "__wrapped__") or hasattr(func, "_partialmethod")
            or hasattr(func, "__partialmethod__")):
        return None
    code = func.__code__
    names = code.co_varnames
    positional, kw_only = code.co_argcount, code.co_kwonlyargcount
    defaults = func.__defaults__ or ()
    kw_defaults = func.__kwdefaults__ or {}
    annotations = func.__annotations__
    first_default = positional - len(defaults)
    params = []
    for i in range(positional):
        name = names[i]
        params.append(Param(name,
                            Param.POSITIONAL_ONLY if i < code.co_posonlyargcount
                            else Param.POSITIONAL_OR_KEYWORD,
                            defaults[i - first_default] if i >= first_default else EMPTY,
                            annotations.get(name, EMPTY)))
    rest = positional + kw_only
    if code.co_flags & _VARARGS:
        name = names[rest]
        params.append(Param(name, Param.VAR_POSITIONAL, EMPTY, annotations.get(name, EMPTY)))
        rest += 1
    for name in names[positional:positional + kw_only]:
        params.append(Param(name, Param.KEYWORD_ONLY, kw_defaults.get(name, EMPTY),
                            annotations.get(name, EMPTY)))
    if code.co_flags & _VARKEYWORDS:
        name = names[rest]
        params.append(Param(name, Param.VAR_KEYWORD, EMPTY, annotations.get(name, EMPTY)))
    return params


def async_kind(func):
    """``"coroutine"`` for an ``async def`` function, ``"generator"`` for an async generator
    function (``async def`` with ``yield``), else None; methods, ``functools.partial`` objects
    and objects whose ``__call__`` is one are looked through."""
    for _ in range(8):   # a chain of wrappers, bounded
        if isinstance(func, types.MethodType):
            func = func.__func__
        elif type(func).__name__ == "partial" and callable(getattr(func, "func", None)):
            func = func.func
        elif not isinstance(func, types.FunctionType) and not isinstance(func, type) \
                and isinstance(getattr(type(func), "__call__", None), types.FunctionType):  # noqa: B004
            func = type(func).__call__
        else:
            break
    code = getattr(func, "__code__", None)
    flags = getattr(code, "co_flags", 0)
    if flags & _COROUTINE:
        return "coroutine"
    if flags & _ASYNC_GENERATOR:
        return "generator"
    return None
