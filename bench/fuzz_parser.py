"""Coverage-guided differential fuzzing of the two request parsers with atheris.

    python bench/fuzz_parser.py -runs=200000            # seeds itself, then mutates
    python bench/fuzz_parser.py -max_total_time=600 CORPUS_DIR

Every input goes to lite_serving.http.parser_py and lite_serving.http.parser_c; any
difference (result attributes and their types, or ParseError status and
message, or an unexpected exception) raises, which libFuzzer reports as a
crash and saves as ``crash-*``. Coverage feedback comes from parser_py
(instrumented at import): it has the same branches as the compiled twin.

The first input byte picks what is fuzzed and with which limits:
0-3 parse_head (whole, and every cut of the input), 4 ChunkedDecoder fed in
pieces, 5 parse_query / unquote_path on the latin-1 text of the input.
"""

import os
import sys
import tempfile

import atheris

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.join(ROOT, "tests"))  # the tests' differential checks: support.parser_twins

with atheris.instrument_imports(include=["lite_serving.http.parser_py"]):
    from lite_serving.http import parser_py

from lite_serving.http import parser_c  # noqa: E402
from support.parser_twins import decoder_run, head_outcome, outcome  # noqa: E402

HEAD_LIMITS = [(), (0, 200, 4, 40), (0, 64, 2, 8), (0, 1024, 20, 100)]
CHUNK_LIMITS = [(1 << 20,), (64, 40, 2), (10, 10, 1), (1 << 70, 0, 0)]

SEEDS = [
    b"\x00GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"\x00POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
    b"Connection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n",
    b"\x01GET http://h/p?q HTTP/1.0\r\nConnection: keep-alive\r\nAccept: a\r\nAccept: b\r\n\r\n",
    b"\x02OPTIONS * HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-continue\r\n\r\n",
    b"\x04" + b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nGET",
    b"\x05a=1&b=x+y&b=%E2%9C%93&caf\xc3\xa9=%zz",
]


def _same(what, a, b, data):
    if a != b:
        raise AssertionError(f"parsers differ on {what} for {data!r}:\n  py: {a!r}\n  c:  {b!r}")


def one_input(raw):
    if not raw:
        return
    mode, data = raw[0] % 6, raw[1:]
    if mode < 4:
        limits = HEAD_LIMITS[mode]
        _same("parse_head", head_outcome(parser_py, data, *limits), head_outcome(parser_c, data, *limits),
              data)
        for cut in range(0, len(data), max(1, len(data) // 16)):
            prefix = data[:cut]
            _same("parse_head prefix", head_outcome(parser_py, prefix, *limits),
                  head_outcome(parser_c, prefix, *limits), prefix)
        _same("parse_head bytearray", head_outcome(parser_py, data, *limits),
              head_outcome(parser_c, bytearray(data), *limits), data)
    elif mode == 4:
        limits = CHUNK_LIMITS[(raw[0] // 6) % len(CHUNK_LIMITS)]
        step = 1 + (raw[0] // 24) % 7
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        _same("ChunkedDecoder", decoder_run(parser_py, [data], limits), decoder_run(parser_c, [data], limits),
              data)
        _same(
            "ChunkedDecoder pieces",
            decoder_run(parser_py, pieces, limits),
            decoder_run(parser_c, pieces, limits),
            data,
        )
    else:
        text = data.decode("latin-1")
        _same("parse_query", outcome(parser_py.parse_query, text), outcome(parser_c.parse_query, text), data)
        _same("unquote_path", outcome(parser_py.unquote_path, text), outcome(parser_c.unquote_path, text),
              data)


def main():
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        seeds = tempfile.mkdtemp(prefix="lite_serving_fuzz_")
        for i, seed in enumerate(SEEDS):
            with open(os.path.join(seeds, f"seed{i}"), "wb") as f:
                f.write(seed)
        argv.append(seeds)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
