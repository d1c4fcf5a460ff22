#!/usr/bin/env python3
"""What one access line costs to make and write, in-process: ``AccessLog.flush`` of batches of 256
records of the echo benchmark's request (a POST with a 27-byte JSON body, no user agent), to a
file through a UTF-8 text stream as stderr is one, text lines and JSON lines.

    python bench/access_line_cost.py [TREE ...]      # default: this checkout

Each tree (a lite_serving checkout, compiled in place or not) is measured in a process of its
own, the trees taking turns over ``--rounds``; prints nanoseconds per line (the median of the
rounds) for each. Much steadier than the end-to-end ``access_log_cost.py`` on a shared machine,
but it leaves out what a line costs the rest of the server (its record, the caches it evicts).
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

MEASURE = r"""
import io, os, sys, tempfile, time
from lite_serving.codecs import json_codec
from lite_serving.http import parser
from lite_serving.server import access_log

json_codec.load()
head = parser.parse_head(b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 27\r\n"
                         b"Content-Type: application/json\r\n\r\n", 0)
records = [("127.0.0.1:40022", head, 200, 0.000123456, None, 123)] * 256
log = access_log.AccessLog()
with tempfile.TemporaryFile() as raw:
    log.stream = io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True)
    if hasattr(access_log, "utf8_buffer"):   # trees from before lines were made as bytes lack it
        log.binary = access_log.utf8_buffer(log.stream)
    for as_json in (False, True):
        log.json = as_json
        best = None
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                log.lines = list(records)
                log.flush()
            took = (time.perf_counter() - start) / 200 / len(records) * 1e9
            best = took if best is None else min(best, took)
        print(best)
"""


def measure(tree):
    out = subprocess.run([sys.executable, "-c", MEASURE], cwd=tree, check=True, text=True,
                         capture_output=True, env=dict(os.environ, PYTHONPATH=str(tree)))
    text, as_json = (float(v) for v in out.stdout.split())
    return text, as_json


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="*", type=Path, default=[HERE.parent])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    results = {tree: ([], []) for tree in args.trees}
    for _ in range(args.rounds):
        for tree in args.trees:
            text, as_json = measure(tree.resolve())
            results[tree][0].append(text)
            results[tree][1].append(as_json)
    print(f"one access line made and written, ns (median of {args.rounds} rounds, each the best of 5):")
    for tree, (text, as_json) in results.items():
        print(f"  {str(tree):40s} text {statistics.median(text):6.0f}   JSON {statistics.median(as_json):6.0f}")


if __name__ == "__main__":
    main()
