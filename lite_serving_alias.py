"""Let ``import openbayes_serving`` load lite_serving when the reference package is not installed.

``install()`` puts an import finder first in ``sys.meta_path``. It answers
for ``openbayes_serving`` only when no real package of that name can be found
(so an installed ``openbayes-serving`` always wins), and then maps every
``openbayes_serving.X`` to ``lite_serving.X``, so that both names share one
set of modules (one ``ServingError`` class). lite_serving itself is imported
only when a predictor imports ``openbayes_serving``. ``python -m
lite_serving`` installs the finder; for ``python predictor.py``, set
``LITE_SERVING_ALIAS=1`` and the ``lite_serving_alias.pth`` file in
site-packages installs it at interpreter start-up.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys

ALIAS = "openbayes_serving"
TARGET = "lite_serving"


class _AliasLoader:
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass


class AliasFinder:
    """Finds ``openbayes_serving[.X]`` as ``lite_serving[.X]``."""

    def find_spec(self, name, path=None, target=None):
        if name == ALIAS:
            if importlib.machinery.PathFinder.find_spec(name) is not None:
                return None  # the real package is installed
            real = TARGET
        elif name.startswith(ALIAS + "."):
            parent = sys.modules.get(ALIAS)
            if getattr(parent, "__name__", None) != TARGET:
                return None
            real = TARGET + name[len(ALIAS):]
        else:
            return None
        return importlib.util.spec_from_loader(name, _AliasLoader(real))


def install():
    """Add the finder once; True if it was added now."""
    if any(isinstance(f, AliasFinder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, AliasFinder())
    return True


def install_from_env():
    """For the .pth file: install when LITE_SERVING_ALIAS is set to something other than 0."""
    if os.environ.get("LITE_SERVING_ALIAS", "") not in ("", "0"):
        install()
