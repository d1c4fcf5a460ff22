"""The model alone, no server: answers to reference bodies, and the throughput ceiling.

    python model_only.py answers MODEL.onnx BODY.json [BODY.json ...]
    python model_only.py ceiling MODEL.onnx BODY.json --batch N --threads T --seconds S

``answers`` prints a JSON list with the answer to each body, each body run alone: what
every server's answer is checked against. ``ceiling`` runs the model back to back on N
copies of the body's rows (and on the rows alone) for S seconds each, in this process
(the harness pins it to the servers' core), and prints samples/s and call times as JSON.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from onnx_rows import RowModel, open_session


def read_body(path):
    return json.loads(Path(path).read_text())


def answers(model_path, body_paths):
    model = RowModel(open_session(model_path, 1))
    return [model.predict(read_body(p)) for p in body_paths]


def time_calls(model, feeds, seconds):
    """Durations (s) of back-to-back calls on ``feeds`` for about ``seconds``, after one warm-up call."""
    model.run(feeds)
    durations, deadline = [], time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        model.run(feeds)
        end = time.perf_counter()
        durations.append(end - start)
        if end > deadline:
            return durations


def ceiling(model_path, body_path, batch, threads, seconds):
    model = RowModel(open_session(model_path, threads))
    feeds = model.feeds(read_body(body_path))
    rows = len(feeds[model.inputs[0][0]])
    batched, _ = model.concatenate([feeds] * batch)
    out = {"batch": batch, "threads": threads}
    for key, f, size in (("batch", batched, rows * batch), ("single", feeds, rows)):
        median = statistics.median(time_calls(model, f, seconds))
        out[f"{key}_samples_s"] = size / median  # the median call: robust to other work preempting this one
        out[f"{key}_call_ms"] = median * 1000
    return out


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("answers")
    a.add_argument("model")
    a.add_argument("bodies", nargs="+")
    c = sub.add_parser("ceiling")
    c.add_argument("model")
    c.add_argument("body")
    c.add_argument("--batch", type=int, required=True)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.command == "answers":
        result = answers(args.model, args.bodies)
    else:
        result = ceiling(args.model, args.body, args.batch, args.threads, args.seconds)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
