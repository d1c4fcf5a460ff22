#!/usr/bin/env python3
"""numpy arrays in: 1M float32 POSTed to a predictor answering their mean, sent as an array ext
value (``lite_serving.codecs.array_ext``) and as lists, to one lite_serving server in one run.

    python bench/arrays.py                 # 3 rounds of 20 requests per form
    python bench/arrays.py --rounds 5 --requests 40

The bodies are made once, before the clock starts: MessagePack ``{"x": <array ext>}`` (4 MB),
MessagePack ``{"x": [floats]}`` (float 32 items, 5 MB) and JSON ``{"x": [floats]}``. Each
round sends every form in turn, ``--requests`` requests one after the other on one keep-alive
connection; a form's figure is its best round (ms per request, end to end: the request sent,
decoded, predict run, the answer read). The server is pinned to one CPU and this client to the
other; the machine is shared, so compare the forms within one run. Writes
``results/arrays.{json,md}``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.envs import lite_env  # noqa: E402
from harness.machine import pin_client  # noqa: E402
from harness.paths import REPO_ROOT, RESULTS_DIR, SERVERS_DIR  # noqa: E402
from ingest import Server  # noqa: E402

HOST = "127.0.0.1"
APP = SERVERS_DIR / "arrays"
N = 1_000_000


def bodies():
    """{form: (content type, body)} and the mean predict must answer."""
    import msgpack
    import numpy as np

    from lite_serving.codecs.array_ext import pack_array_ext
    x = np.random.default_rng(7).random(N, dtype=np.float32)
    ext = b"\x81\xa1x" + pack_array_ext(x)   # {"x": <array ext>}
    assert msgpack.unpackb(ext, ext_hook=lambda c, d: msgpack.ExtType(c, d))["x"].code == 78
    listed = x.tolist()
    forms = {
        "array ext (msgpack)": ("application/msgpack", ext),
        "lists (msgpack)": ("application/msgpack", msgpack.packb({"x": listed}, use_single_float=True)),
        "lists (JSON)": ("application/json", json.dumps({"x": listed}).encode()),
    }
    return forms, float(x.mean())


def timed(port, content_type, body, requests, mean):
    """ms per request over ``requests`` requests on one connection."""
    import http.client
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        began = time.perf_counter()
        for _ in range(requests):
            conn.request("POST", "/", body=body, headers={"Content-Type": content_type})
            answer = conn.getresponse()
            got = json.loads(answer.read())
            if answer.status != 200 or abs(got["mean"] - mean) > 1e-4:
                raise RuntimeError(f"wrong answer {answer.status} {got}")
        return (time.perf_counter() - began) / requests * 1000
    finally:
        conn.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    server_cpu, _ = pin_client()
    forms, mean = bodies()
    server = Server("lite", "lite", [sys.executable, "-m", "lite_serving", str(APP), "--host", HOST,
                                     "--port", "{port}", "--no-access-log"],
                    lite_env(REPO_ROOT), server_cpu)
    best = {}
    try:
        server.start()
        for ctype, body in forms.values():   # a warm-up request each
            timed(server.port, ctype, body, 1, mean)
        for _ in range(args.rounds):
            for form, (ctype, body) in forms.items():
                ms = timed(server.port, ctype, body, args.requests, mean)
                best[form] = min(ms, best.get(form, float("inf")))
                print(f"{form:>22}: {ms:8.2f} ms per request", flush=True)
    finally:
        server.stop()
    ext_ms = best["array ext (msgpack)"]
    lines = ["# numpy arrays in\n",
             f"1M float32 to a predictor answering their mean (`servers/arrays/`), end to end; best "
             f"of {args.rounds} rounds of {args.requests} requests on one connection, forms in turn "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, shared machine: compare "
             "within the run).\n",
             "| form | body bytes | ms per request | array ext is faster by |", "| --- | --- | --- | --- |"]
    for form, (_, body) in forms.items():
        lines.append(f"| {form} | {len(body):,} | {best[form]:.2f} | {best[form] / ext_ms:.1f}× |")
    markdown = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "arrays.md").write_text(markdown)
    (args.out / "arrays.json").write_text(json.dumps(
        {"rounds": args.rounds, "requests": args.requests,
         "ms": best, "bytes": {f: len(b) for f, (_, b) in forms.items()}}, indent=1) + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
