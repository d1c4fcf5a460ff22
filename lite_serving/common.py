"""What ``openbayes_serving.common`` offers predictors: ``ServingError`` and ``detect_env``."""

import os
import sys

from lite_serving.errors import ServingError

__all__ = ["ServingError", "detect_env"]


def detect_env():
    """``"production"``, ``"gear"`` (notebook containers) or ``"local"``, from the environment."""
    if sys.platform == "win32":
        return "local"
    if os.environ.get("OPENBAYES_JOB_URL"):
        return "gear"
    if os.environ.get("OPENBAYES_SERVING_PRODUCTION"):
        return "production"
    return "local"
