"""Let ``import openbayes_serving`` find lite_serving when the real package is absent.

Installed automatically by ``python -m lite_serving``; for ``python
predictor.py`` set ``LITE_SERVING_ALIAS=1`` (the ``lite_serving_alias.pth``
file installed beside the package imports this module at start-up then).
"""

import importlib.util
import os
import sys


def install():
    """Map ``openbayes_serving`` and ``openbayes_serving.common`` to lite_serving; True if done."""
    if "openbayes_serving" in sys.modules:
        return False
    try:
        if importlib.util.find_spec("openbayes_serving") is not None:
            return False
    except (ImportError, ValueError):
        pass
    import lite_serving
    from lite_serving import common
    sys.modules["openbayes_serving"] = lite_serving
    sys.modules["openbayes_serving.common"] = common
    return True


def install_from_env():
    """Called by the .pth file at interpreter start-up: cheap unless LITE_SERVING_ALIAS is set."""
    if os.environ.get("LITE_SERVING_ALIAS", "") not in ("", "0"):
        install()
