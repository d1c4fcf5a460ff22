"""``import openbayes_serving`` gives lite_serving to predictor files written for openbayes-serving.

Two import finders, one per mode:

- fallback: ``lite_serving_alias.pth`` (installed beside this module) adds it
  at every interpreter start, *last* in ``sys.meta_path``. Python asks it only
  about names that no other finder found, so it costs nothing to imports that
  succeed, and an installed openbayes-serving package is imported as usual:
  ``python predictor.py`` runs the reference when it is installed and
  lite_serving when it is not.
- forced: *first* in ``sys.meta_path``, mapping ``openbayes_serving`` even
  when openbayes-serving is installed. ``python -m lite_serving`` /
  ``lite-serving`` install it (the program started is lite_serving, so the
  predictor gets lite_serving); so does the .pth file when
  ``LITE_SERVING_ALIAS=1``. ``LITE_SERVING_ALIAS=0`` turns the .pth hook off.

Every ``openbayes_serving.X`` is ``lite_serving.X`` (``serv`` and ``event``,
the reference's names for the ``run`` and ``emit_event`` modules, included),
so both names share one set of modules and one ``ServingError`` class.
lite_serving is imported only when a predictor imports ``openbayes_serving``.
This module imports nothing at interpreter start beyond ``sys``.
"""

import sys

ALIAS = "openbayes_serving"
TARGET = "lite_serving"
RENAMED = {"serv": "serve", "event": "events"}

# The version of an installed openbayes-serving that the forced mode hid, once
# ``import openbayes_serving`` has happened ("" when none is installed).
shadowed = None


class _AliasLoader:
    def __init__(self, real):
        self.real = real
        self.spec = None

    def create_module(self, spec):
        import importlib
        module = importlib.import_module(self.real)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        # the import system stamped the alias's spec on the shared module; give it back its own
        module.__spec__ = self.spec


class AliasFinder:
    """Finds ``openbayes_serving[.X]`` as ``lite_serving[.X]``.

    ``forced``: answers for ``openbayes_serving`` itself even when
    openbayes-serving is installed; otherwise only for its submodules once
    ``openbayes_serving`` is lite_serving (the fallback finder adds such a
    finder when it maps the package).
    """

    def __init__(self, forced):
        self.forced = forced

    def find_spec(self, name, path=None, target=None):
        if name == ALIAS:
            if not self.forced:
                return None
            _note_shadowed()
            real = TARGET
        elif name.startswith(ALIAS + "."):
            if getattr(sys.modules.get(ALIAS), "__name__", None) != TARGET:
                return None
            head, _, tail = name[len(ALIAS) + 1:].partition(".")
            real = ".".join(filter(None, (TARGET, RENAMED.get(head, head), tail)))
            if not _exists(real):
                return None
        else:
            return None
        return _alias_spec(name, real)


class FallbackFinder:
    """Last in ``sys.meta_path``: ``openbayes_serving`` is lite_serving when nothing else has it."""

    def find_spec(self, name, path=None, target=None):
        if name != ALIAS:
            return None
        _add_first(AliasFinder(forced=False))  # submodules must not be found under lite_serving's path
        return _alias_spec(name, TARGET)


def _alias_spec(name, real):
    # importlib.machinery, not importlib.util: the latter costs an import at every start
    import importlib.machinery
    return importlib.machinery.ModuleSpec(name, _AliasLoader(real))


def _exists(real):
    """Whether the lite_serving module ``real`` can be imported (its parent is imported to look)."""
    import importlib
    import importlib.machinery
    if real in sys.modules:
        return True
    parent, _, leaf = real.rpartition(".")
    try:
        package = importlib.import_module(parent)
    except ImportError:
        return False
    return importlib.machinery.PathFinder.find_spec(real, getattr(package, "__path__", None)) is not None


def _note_shadowed():
    """Record the version of an installed openbayes-serving that the forced mode hides."""
    global shadowed
    if shadowed is not None:
        return
    import importlib.machinery
    import os
    spec = importlib.machinery.PathFinder.find_spec(ALIAS)
    if spec is None or not spec.submodule_search_locations:
        shadowed = ""
        return
    site = os.path.dirname(list(spec.submodule_search_locations)[0])
    version = "(version unknown)"
    try:
        for entry in os.listdir(site):
            if entry.startswith("openbayes_serving-") and entry.endswith((".dist-info", ".egg-info")):
                version = entry[len("openbayes_serving-"):].rsplit(".", 1)[0]
                break
    except OSError:
        pass
    shadowed = version


def _add_first(finder):
    if not any(type(f) is type(finder) and getattr(f, "forced", None) == getattr(finder, "forced", None)
               for f in sys.meta_path):
        sys.meta_path.insert(0, finder)


def install(forced=False):
    """Map ``openbayes_serving`` to lite_serving: always when ``forced``, else only when not installed."""
    if forced:
        _add_first(AliasFinder(forced=True))
    elif not any(type(f) is FallbackFinder for f in sys.meta_path):
        sys.meta_path.append(FallbackFinder())


def install_from_env(environ):
    """The .pth hook: fallback by default, forced with ``LITE_SERVING_ALIAS=1``, off with ``=0``."""
    value = environ.get("LITE_SERVING_ALIAS", "")
    if value == "0":
        return
    install(forced=value != "")
