"""Microbenchmark of the tensor codec: numpy arrays to MessagePack, and the answer encoders.

    python bench/codec_bench.py [--repeat N] [--quick]

First table: one array to MessagePack bytes, three ways —
``msgpack.packb(array.tolist())`` (what lite_serving did before the codec,
and the only way the reference has), the pure-Python codec (``codec_py``,
numpy-vectorised) and the compiled one (``codec_c``). Second table: what
``predict`` answers goes through ``lite_serving.predictor.encoder``: JSON (orjson's
numpy path) against MessagePack (the codec), for a bare array and a dict
of arrays.

Each cell is the best of ``--repeat`` timed calls in this one process (the
least disturbed by the rest of the machine). Ratios are ``tolist`` time ÷
codec time. Build the compiled codec first: ``python setup.py build_ext
--inplace``.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402

from lite_serving.codecs import codec_py  # noqa: E402
from lite_serving.predictor import encoder

try:
    from lite_serving.codecs import codec_c  # noqa: E402
except ImportError as exc:
    sys.exit(f"lite_serving.codecs.codec_c is not built ({exc}); run: python setup.py build_ext --inplace")

MILLION = 1_000_000


def arrays(quick):
    """(title, array) cases; the first one is the headline."""
    rng = np.random.default_rng(0)
    f32 = rng.random(MILLION, dtype=np.float32)
    cases = [
        ("1M float32, 1-D", f32),
        ("1M float32, 1000x1000", f32.reshape(1000, 1000)),
        ("1M float32, 1000x1000 transposed view", f32.reshape(1000, 1000).T),
        ("1M float32, big-endian", f32.astype(">f4")),
        ("1M float64", rng.random(MILLION)),
        ("1M float16", f32.astype(np.float16)),
        ("1M int64 in 0..99 (fixints)", rng.integers(0, 100, MILLION)),
        ("1M int64 in 0..50000 (mixed forms)", rng.integers(0, 50000, MILLION)),
        ("1M bool", f32 > 0.5),
        ("1k float32, 10x100", f32[:1000].reshape(10, 100)),
    ]
    return cases[:3] if quick else cases


def answers(quick):
    rng = np.random.default_rng(1)
    f32 = rng.random(MILLION, dtype=np.float32)
    detections = {"boxes": rng.random((100, 4), dtype=np.float32), "scores": rng.random(100, dtype=np.float32),
                  "labels": rng.integers(0, 80, 100), "names": ["cat"] * 100}
    cases = [("1M float32 array", f32), ("{'outputs': 1M float32 array}", {"outputs": f32}),
             ("detections: 3 small arrays + 100 str", detections)]
    return cases[:2] if quick else cases


def best(fn, repeat):
    """Best wall time of ``repeat`` calls, in seconds (the calls are long: timed one by one)."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per cell; best kept (default 7)")
    ap.add_argument("--quick", action="store_true", help="the first cases only")
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, msgpack {msgpack.version}, "
          f"best of {args.repeat} calls per cell\n")

    header = (f"{'array to MessagePack':<40} {'tolist ms':>10} {'pure ms':>9} {'compiled ms':>12} "
              f"{'pure x':>7} {'compiled x':>11} {'bytes':>10} {'tolist bytes':>13}")
    print(header)
    print("-" * len(header))
    for title, array in arrays(args.quick):
        packed = codec_c.pack_array(array)
        assert packed == codec_py.pack_array(array), title  # the two agree before being compared
        assert msgpack.unpackb(packed) == array.tolist(), title
        slow = msgpack.packb(array.tolist())
        t_list = best(lambda array=array: msgpack.packb(array.tolist()), args.repeat)
        t_py = best(lambda array=array: codec_py.pack_array(array), args.repeat)
        t_c = best(lambda array=array: codec_c.pack_array(array), args.repeat)
        print(f"{title:<40} {t_list * 1e3:>10.2f} {t_py * 1e3:>9.2f} {t_c * 1e3:>12.2f} "
              f"{t_list / t_py:>6.1f}x {t_list / t_c:>10.1f}x {len(packed):>10,} {len(slow):>13,}")

    print()
    header = (f"{'answer (lite_serving.predictor.encoder)':<40} {'JSON ms':>9} {'msgpack ms':>11} "
              f"{'JSON / msgpack':>15} {'JSON bytes':>12} {'msgpack bytes':>14}")
    print(header)
    print("-" * len(header))
    for title, value in answers(args.quick):
        t_json = best(lambda value=value: encoder.encode_json(value), args.repeat)
        t_msgpack = best(lambda value=value: encoder.encode_msgpack(value), args.repeat)
        print(f"{title:<40} {t_json * 1e3:>9.2f} {t_msgpack * 1e3:>11.2f} {t_json / t_msgpack:>14.1f}x "
              f"{len(encoder.encode_json(value)):>12,} {len(encoder.encode_msgpack(value)):>14,}")
    print(f"\nencoder uses the {'compiled' if encoder.pack_array is codec_c.pack_array else 'pure'} codec")


if __name__ == "__main__":
    main()
