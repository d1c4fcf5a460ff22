"""``lite-serving init [FILE]`` and ``serving [FILE]``: write a commented predictor template,
and beside it a test of it using :class:`lite_serving.testing.TestClient`.

``serving`` is the command openbayes-serving installs for the same purpose; its
template imports ``openbayes_serving``, which lite_serving also answers to.
An existing predictor is overwritten only with ``--force`` or when the person at
the terminal says yes; an existing test file only with ``--force``.
"""

import os
import sys

TEMPLATE = '''\
"""A predictor: lite_serving builds Predictor once, then calls predict for every POST /.

Run it with `python {filename}` or `lite-serving DIR` (DIR holding this file), then:
    curl -X POST localhost:25252/ -H 'Content-Type: application/json' -d '{{"values": [1, 2]}}'
or open http://localhost:25252/docs to try it in a browser. `pytest` runs {test_filename}.
`lite-serving --help` lists every flag (port, threads, workers, ...).
"""

import {module} as serv


class Predictor:
    # What a request looks like: shown on /openapi.json, prefilled on the /docs page
    # (a JSON Schema of the body, and an example of one). Optional; output_schema too.
    input_schema = {{"type": "object", "required": ["values"],
                    "properties": {{"values": {{"type": "array", "items": {{"type": "number"}}}}}}}}
    input_example = {{"values": [1, 2]}}

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
        Waiting on other services? Make it `async def predict`: requests then wait together.
        """
        values = json.get("values") if isinstance(json, dict) else None
        if not isinstance(values, list):
            raise serv.ServingError('send {{"values": [numbers]}}', status_code=400)
        return {{"doubled": [v * self.scale for v in values]}}


if __name__ == "__main__":  # `python predictor.py` serves it; lite-serving DIR runs this too
    serv.run(Predictor)
'''


TEST_TEMPLATE = '''\
"""Tests of {filename}: run them with `pytest`.

TestClient builds Predictor and serves it in this process on a free port: each request goes
through the real server, as it will in production.
"""

from lite_serving.testing import TestClient

from {stem} import Predictor


def test_the_example_is_doubled():
    with TestClient(Predictor) as client:
        r = client.post("/", json=Predictor.input_example)
        assert r.status_code == 200
        assert r.json() == {{"doubled": [2, 4]}}


def test_a_body_without_values_is_refused():
    with TestClient(Predictor) as client:
        r = client.post("/", json={{"nothing": 1}})
        assert r.status_code == 400
        assert "values" in r.json()["error"]
'''


def template_text(module="lite_serving", filename="predictor.py"):
    """The template, importing ``module`` as ``serv``."""
    return TEMPLATE.format(module=module, filename=filename, test_filename=name_of_test(filename))


def name_of_test(filename):
    """``test_predictor.py`` for ``predictor.py``."""
    return "test_" + os.path.basename(filename)


def template_test_text(filename="predictor.py"):
    """The test of the template written as ``filename``."""
    stem = os.path.splitext(os.path.basename(filename))[0]
    return TEST_TEMPLATE.format(filename=os.path.basename(filename), stem=stem)


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
    name = os.path.basename(path)
    test_path = os.path.join(os.path.dirname(path), name_of_test(name))
    write_test = force or not os.path.exists(test_path)
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(template_text(module, name))
        if write_test:
            with open(test_path, "w", encoding="utf-8") as f:
                f.write(template_test_text(name))
    except OSError as exc:
        sys.stderr.write(f"cannot write {exc.filename or path}: {exc.strerror or exc}\n")
        return 1
    tests = f" and its test {test_path}" if write_test else \
        f" ({test_path} exists and was left as it is)"
    print(f"wrote {path}{tests}: edit Predictor, then run `python {name}`; `pytest` runs the test")
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
