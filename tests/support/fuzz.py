"""Hypothesis settings shared by the property tests."""

import os


def examples(default):
    """Hypothesis examples for a property test: LITE_SERVING_FUZZ_EXAMPLES when set (fewer under
    emulation, many more for a long fuzzing session), else ``default``."""
    return int(os.environ.get("LITE_SERVING_FUZZ_EXAMPLES", "0") or 0) or default
