"""``lite-serving init [FILE]`` and ``serving [FILE]``: write a commented predictor template.

``serving`` is the command openbayes-serving installs for the same purpose; its
template imports ``openbayes_serving``, which lite_serving also answers to.
An existing file is overwritten only with ``--force`` or when the person at
the terminal says yes.
"""

import os
import sys

TEMPLATE = '''\
"""A predictor: lite_serving builds Predictor once, then calls predict for every POST /.

Run it with `python predictor.py` or `lite-serving DIR` (DIR holding this file), then:
    curl -X POST localhost:25252/ -H 'Content-Type: application/json' -d '{{"values": [1, 2]}}'
`lite-serving --help` lists every flag (port, threads, workers, ...).
"""

import {module} as serv


class Predictor:
    def __init__(self):
        """Load the model and whatever else every request needs; runs once, before the port
        accepts connections. Ask for `onnx` (def __init__(self, onnx)) to get an
        onnxruntime session of the .onnx file beside this one."""
        self.scale = 2

    def predict(self, json):
        """Answer one request. `json` is the request body, decoded from JSON or MessagePack.

        Other arguments you may ask for by name: `payload` (decoded body, or raw bytes for
        other media types), `data` (raw bytes), `params` (query string), `headers`,
        `request` (a Flask-style request object). Return a dict or list (sent as JSON, or
        MessagePack when the client accepts it), a str, bytes, or serv.Response. Raise
        serv.ServingError("message", status_code=400) to answer an error yourself.
        """
        values = json.get("values") if isinstance(json, dict) else None
        if not isinstance(values, list):
            raise serv.ServingError('send {{"values": [numbers]}}', status_code=400)
        return {{"doubled": [v * self.scale for v in values]}}


if __name__ == "__main__":  # `python predictor.py` serves it; lite-serving DIR runs this too
    serv.run(Predictor)
'''


def template_text(module="lite_serving"):
    """The template, importing ``module`` as ``serv``."""
    return TEMPLATE.format(module=module)


def _confirm(path):
    """Ask the person at the terminal; False when nobody is there to ask."""
    if not sys.stdin or not sys.stdin.isatty():
        return False
    sys.stdout.write(f"{path} exists; overwrite it? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def write_template(path, module, force=False):
    """Write the template to ``path``; returns an exit status and says what happened."""
    if os.path.isdir(path):
        path = os.path.join(path, "predictor.py")
    if os.path.exists(path) and not force:
        if not _confirm(path):
            sys.stderr.write(f"{path} exists and was left as it is; use --force to overwrite it\n")
            return 1
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(template_text(module))
    except OSError as exc:
        sys.stderr.write(f"cannot write {path}: {exc.strerror or exc}\n")
        return 1
    print(f"wrote {path}: edit Predictor, then run `python {os.path.basename(path)}`")
    return 0


def _parse(argv, prog, module):
    import argparse
    parser = argparse.ArgumentParser(prog=prog, description="Write a commented predictor template.")
    parser.add_argument("file", nargs="?", default="predictor.py",
                        help="where to write it (default predictor.py; a directory gets DIR/predictor.py)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file without asking")
    options = parser.parse_args(argv)
    return write_template(options.file, module, options.force)


def init_main(argv):
    """``lite-serving init [FILE] [--force]``."""
    return _parse(argv, "lite-serving init", "lite_serving")


def serving_main():
    """The ``serving`` console script, as openbayes-serving users know it."""
    sys.exit(_parse(sys.argv[1:], "serving", "openbayes_serving"))
