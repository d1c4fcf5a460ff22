"""``python -m lite_serving DIR [flags]``: serve the model directory DIR.

- DIR/start.sh exists → it runs with bash in DIR instead (fully custom mode);
- otherwise DIR becomes the working directory and the first entry of
  ``sys.path``, and DIR/predictor.py runs as ``__main__`` so its own
  ``serv.run(...)`` starts serving; a file that defines a predictor class but
  never calls ``run`` gets its one class with ``predict`` served.

``import openbayes_serving`` resolves to lite_serving when the reference
package is not installed.
"""

import os
import sys
import types

USAGE = """usage: python -m lite_serving DIR [--host H] [--port P] [--model-path PATH] [options]

Serves DIR/predictor.py (or runs DIR/start.sh). Options: python -m lite_serving DIR --help"""


def _fail(message):
    sys.stderr.write(f"lite_serving: error: {message}\n")
    sys.exit(2)


def run_as_main(path):
    """Execute the file as the program's ``__main__`` module; returns its namespace.

    Like ``runpy.run_path`` (whose import costs milliseconds of start-up), except
    that the module stays ``sys.modules["__main__"]``, so that pickle and
    friends find the predictor's classes there.
    """
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=path, __cached__=None, __loader__=None, __package__=None,
                           __spec__=None)
    sys.modules["__main__"] = module
    exec(code, module.__dict__)
    return module.__dict__


def _predictor_classes(namespace):
    return [obj for name, obj in namespace.items()
            if isinstance(obj, type) and obj.__module__ == "__main__"
            and callable(getattr(obj, "predict", None)) and not name.startswith("_")]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"lite_serving {__version__}")
        return 0
    target, rest = argv[0], argv[1:]
    if os.path.isfile(target) and target.endswith(".py"):
        directory, script = os.path.dirname(os.path.abspath(target)), os.path.basename(target)
    elif os.path.isdir(target):
        directory, script = os.path.abspath(target), "predictor.py"
    else:
        _fail(f"{target!r} is not a model directory or a predictor .py file")

    start_sh = os.path.join(directory, "start.sh")
    if script == "predictor.py" and os.path.isfile(start_sh):
        sys.stderr.write(f"lite_serving: {start_sh} found; running it with bash (custom mode)\n")
        sys.stderr.flush()
        os.chdir(directory)
        os.execvp("bash", ["bash", "start.sh", *rest])

    path = os.path.join(directory, script)
    if not os.path.isfile(path):
        from .zero_code import OnnxModelPredictor, has_only_model
        if script == "predictor.py" and has_only_model(directory):
            os.chdir(directory)
            sys.argv = [os.path.join(directory, "(onnx model)"), *rest]
            from .serve import run
            run(OnnxModelPredictor)
            return 0
        _fail(f"no {script} in {directory}; write one with a Predictor class "
              "(see the README), put a .onnx model there, or add a start.sh")

    os.chdir(directory)
    sys.path.insert(0, directory)
    sys.argv = [path, *rest]
    import lite_serving_alias
    lite_serving_alias.install()
    from .serve import run, state
    namespace = run_as_main(path)
    if state["served"]:
        return 0
    classes = _predictor_classes(namespace)
    if len(classes) > 1:
        named = [c for c in classes if c.__name__ == "Predictor"]
        if len(named) != 1:
            _fail(f"{script} defines several classes with predict ({', '.join(c.__name__ for c in classes)})"
                  " and never calls serv.run(...); call it with the one to serve")
        classes = named
    if not classes:
        _fail(f"{script} never calls serv.run(...) and defines no class with a predict method")
    run(classes[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
