"""``lite-serving DIR [flags]`` (``python -m lite_serving DIR [flags]``): serve the model directory DIR.

- DIR/start.sh exists → it runs with bash in DIR instead (fully custom mode);
- otherwise DIR becomes the working directory and the first entry of
  ``sys.path``, and DIR/predictor.py runs as ``__main__`` so its own
  ``serv.run(...)`` starts serving; a file that defines a predictor class but
  never calls ``run`` gets its one class with ``predict`` served.
- ``lite-serving init [FILE]`` writes a commented predictor template.

The program started is lite_serving, so ``import openbayes_serving`` gives
lite_serving here even when the openbayes-serving package is installed.
"""

import os
import sys
import types


def _prog():
    name = os.path.basename(sys.argv[0] if sys.argv else "")
    return "lite-serving" if name == "lite-serving" else "python -m lite_serving"


def _fail(message):
    prog = _prog()
    sys.stderr.write(f"{prog}: error: {message}\n"
                     f"usage: {prog} DIR [flags]   ({prog} --help lists every flag)\n")
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


def _takes_value(arg):
    """Whether the flag ``arg`` takes the next argument as its value (abbreviations included)."""
    from lite_serving.process.config import BY_FLAG
    if not arg.startswith("--") or "=" in arg:
        return False
    key = arg[2:].replace("-", "_")
    exact = BY_FLAG.get(key)
    matches = [exact] if exact else [s for flag, s in BY_FLAG.items() if flag.startswith(key)]
    return len(matches) == 1 and matches[0].kind is not bool


def split_target(argv):
    """``(DIR or file, the flags)``: the target is the first argument that is not a flag or its value."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest = argv[i + 1:]
            return (rest[0], argv[:i] + rest[1:]) if rest else (None, argv[:i])
        if arg.startswith("-") and arg != "-":
            i += 2 if _takes_value(arg) else 1
            continue
        return arg, argv[:i] + argv[i + 1:]
    return None, list(argv)


def _help():
    from lite_serving.process.config import build_argparser
    build_argparser(_prog(), directory=True).print_help()
    return 0


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "init":
        from lite_serving.process.template import init_main
        return init_main(argv[1:])
    if not argv:
        _fail("the model directory is missing: give the directory holding predictor.py")
    if "-h" in argv or "--help" in argv:
        return _help()
    if argv[0] in ("-V", "--version"):
        from lite_serving import __version__
        print(f"lite_serving {__version__}")
        return 0
    target, rest = split_target(argv)
    if target is None:
        _fail("the model directory is missing: give the directory holding predictor.py before "
              f"or after the flags, e.g. {_prog()} . {' '.join(argv)}")
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

    from lite_serving import serve
    from lite_serving.process import config
    serve.state["cwd"] = config.launch_directory = os.getcwd()
    serve.state["argv"] = argv
    serve.state["prog"] = _prog()
    if serve.reload_requested(rest):
        return serve.reload_directory(directory, rest)

    path = os.path.join(directory, script)
    if not os.path.isfile(path):
        from lite_serving.predictor.zero_code import OnnxModelPredictor, has_only_model
        if script == "predictor.py" and has_only_model(directory):
            os.chdir(directory)
            sys.argv = [os.path.join(directory, "(onnx model)"), *rest]
            serve.run(OnnxModelPredictor)
            return 0
        _fail(f"no {script} in {directory}; write one with `{_prog()} init {target}` (a commented "
              "template), put a .onnx model there, or add a start.sh")

    os.chdir(directory)
    sys.path.insert(0, directory)
    sys.argv = [path, *rest]
    import lite_serving_alias
    lite_serving_alias.install(forced=True)
    namespace = run_as_main(path)
    if serve.state["served"]:
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
    serve.run(classes[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
