"""Microbenchmark of the request parser alone: compiled (parser_c) vs pure (parser_py).

    python bench/parser_bench.py [--time SECONDS_PER_MEASUREMENT] [--repeat N]

Each case runs in a tight ``time.perf_counter`` loop in this one process,
importing both ``lite_serving.http.parser_py`` and ``lite_serving.http.parser_c``;
the best of ``--repeat`` measurements is kept (the least disturbed by the
rest of the machine). Build the compiled parser first:
``python setup.py build_ext --inplace``.
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lite_serving.http import parser_py  # noqa: E402

try:
    from lite_serving.http import parser_c  # noqa: E402
except ImportError as exc:
    sys.exit(f"lite_serving.http.parser_c is not built ({exc}); run: python setup.py build_ext --inplace")

# exactly what wrk sends with bench/lua/post.lua
WRK = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
       b"Content-Length: 45\r\n\r\n")
# the same, plus the usual few headers of other clients
POST = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk/4.2.0\r\nAccept: */*\r\n"
        b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n")
GET = (b"GET /v2/health/ready?verbose=1 HTTP/1.1\r\nHost: localhost:8080\r\n"
       b"User-Agent: kube-probe/1.29\r\nAccept: */*\r\nConnection: close\r\n\r\n")
BROWSER = (b"POST /predict HTTP/1.1\r\nHost: models.example.com\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
           b"Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.5\r\n"
           b"Accept-Encoding: gzip, deflate, br\r\nContent-Type: application/json\r\n"
           b"Content-Length: 1234\r\nOrigin: https://app.example.com\r\nConnection: keep-alive\r\n"
           b"Referer: https://app.example.com/\r\nSec-Fetch-Dest: empty\r\nSec-Fetch-Mode: cors\r\n"
           b"Sec-Fetch-Site: same-site\r\n\r\n")
CHUNKED = b"".join(b"%x\r\n%s\r\n" % (n, b"x" * n) for n in (512, 512, 1024, 300)) + b"0\r\n\r\n"
QUERY = "model=resnet50&top_k=5&labels=cat+dog&note=%E2%9C%93+ok"


def loop_call(fn, arg, n):
    """``n`` calls of ``fn(arg)`` (a head or a query string parsed), their seconds."""
    rng = range(n)
    t0 = time.perf_counter()
    for _ in rng:
        fn(arg)
    return time.perf_counter() - t0


def loop_head_fields(parse, data, n):
    rng = range(n)
    t0 = time.perf_counter()
    for _ in rng:
        _ = parse(data).fields   # built on first access: that is what is timed
    return time.perf_counter() - t0


def loop_chunked(decoder, data, n):
    rng = range(n)
    t0 = time.perf_counter()
    for _ in rng:
        dec = decoder(1 << 20)
        dec.feed(data)
        dec.body()
    return time.perf_counter() - t0


def measure(loop, fn, arg, seconds, repeat):
    """Best time per call, in seconds, over ``repeat`` runs of about ``seconds`` each."""
    n = 10
    while True:  # calibrate
        spent = loop(fn, arg, n)
        if spent >= seconds / 5:
            break
        n *= 4 if spent < seconds / 50 else 2
    n = max(1, int(n * seconds / spent))
    return min(loop(fn, arg, n) for _ in range(repeat)) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time", type=float, default=0.3, help="seconds per measurement (default 0.3)")
    ap.add_argument("--repeat", type=int, default=5, help="measurements per case; best kept (default 5)")
    args = ap.parse_args()

    for data in (WRK, POST, GET, BROWSER):  # the two must agree before being compared
        a, b = parser_py.parse_head(data), parser_c.parse_head(data)
        assert all(getattr(a, k) == getattr(b, k) for k in ("method", "path", "fields", "end"))

    cases = [
        (f"POST head, wrk exactly, 3 fields ({len(WRK)} B)", loop_call, "parse_head", WRK),
        (f"POST head, wrk-like, 6 fields ({len(POST)} B)", loop_call, "parse_head", POST),
        (f"GET head, probe, 4 fields ({len(GET)} B)", loop_call, "parse_head", GET),
        (f"POST head, browser, 14 fields ({len(BROWSER)} B)", loop_call, "parse_head", BROWSER),
        ("POST head + .fields list", loop_head_fields, "parse_head", POST),
        (f"chunked body, 4 chunks ({len(CHUNKED)} B)", loop_chunked, "ChunkedDecoder", CHUNKED),
        ("parse_query, 4 pairs", loop_call, "parse_query", QUERY),
    ]
    print(f"python {sys.version.split()[0]}, best of {args.repeat} x {args.time:.2f} s per cell\n")
    header = f"{'case':<44} {'pure ns':>10} {'compiled ns':>12} {'pure /s':>11} {'compiled /s':>12} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    ratios = []
    for title, loop, name, arg in cases:
        t_py = measure(loop, getattr(parser_py, name), arg, args.time, args.repeat)
        t_c = measure(loop, getattr(parser_c, name), arg, args.time, args.repeat)
        ratios.append(t_py / t_c)
        print(f"{title:<44} {t_py * 1e9:>10.0f} {t_c * 1e9:>12.0f} {1 / t_py:>11,.0f} "
              f"{1 / t_c:>12,.0f} {t_py / t_c:>6.1f}x")
    print("-" * len(header))
    geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"{'geometric mean of the ratios':<44} {'':>10} {'':>12} {'':>11} {'':>12} {geo:>6.1f}x")


if __name__ == "__main__":
    main()
