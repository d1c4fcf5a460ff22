"""Predictor sources more than one test folder serves."""

import re

# The application adds its own handler to the access logger.
APP_LOGGING = """
    import logging, sys
    import openbayes_serving as serv

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("APP-FORMAT %(name)s %(message)s"))
    logging.getLogger("lite_serving.access").addHandler(handler)

    class Predictor:
        def predict(self, json):
            return json

    if __name__ == "__main__":
        serv.run(Predictor)
"""


# The line that says the port is bound (not yet listening) and the predictor is being built.
BOUND = re.compile(r"building .+; (?:\[([^\]]+)\]|([^\s\[]+)):(\d+) is bound and takes connections "
                   r"once it is built")

GATED = """
    import os
    import sys
    import time

    import openbayes_serving as serv


    class Predictor:
        def __init__(self):
            print("INIT-START", file=sys.stderr, flush=True)
            gate = os.environ.get("TEST_INIT_GATE")
            while gate and not os.path.exists(gate):   # loading lasts until the test allows it
                time.sleep(0.02)
            if os.environ.get("TEST_INIT_FAIL"):
                raise RuntimeError("model-load-failed-distinctly")

        def predict(self, json):
            if isinstance(json, dict) and json.get("gate"):
                print("PREDICT-START", file=sys.stderr, flush=True)
                while not os.path.exists(json["gate"]):
                    time.sleep(0.02)
            return {"pid": os.getpid(), "echo": json}


    if __name__ == "__main__":
        serv.run(Predictor)
"""


def raising_in(method, message):
    """A predictor echoing its JSON whose ``method`` (``__init__``, ``run``) raises
    ``RuntimeError(message)``: a model that fails to load, a background job that fails."""
    return f"""
    import openbayes_serving as serv


    class Predictor:
        def {method}(self):
            raise RuntimeError({message!r})

        def predict(self, json):
            return json


    if __name__ == "__main__":
        serv.run(Predictor)
"""
