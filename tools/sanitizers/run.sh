#!/usr/bin/env bash
# The compiled modules (_speedups/*.pyx) built with AddressSanitizer and UndefinedBehaviorSanitizer,
# and their in-process tests and fuzzers run against that build: any out-of-bounds access, use
# after free or undefined behaviour in them stops the run with the sanitizer's report.
#
#   tools/sanitizers/run.sh [-- PYTEST_ARGS...]
#
# Needs gcc (with libasan and libubsan: Debian's gcc has them), Cython and the test dependencies
# in the Python that runs it ($PYTHON, default python3: the project's virtual environment).
# The build goes to a temporary directory: the checkout's own modules are left as they are.
# Python is not built with the sanitizers: libasan is preloaded, PYTHONMALLOC=malloc sends every
# object to the checked allocator, leak detection is off (Python keeps memory until exit) and a
# failed allocation returns NULL (Python's MemoryError, which some tests expect: the two
# "AddressSanitizer failed to allocate" warnings come from the array too large for memory).
# LITE_SERVING_FUZZ_EXAMPLES sets the hypothesis examples of each property test (default: the
# tests' own). A few minutes on two cores.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
CC="${CC:-gcc}"
TESTS=(tests/http/test_parser.py tests/http/test_parser_fuzz.py tests/codecs/test_codec.py tests/codecs/test_json_plain.py
       tests/server/test_access_lines.py tests/codecs/test_msgpack_split.py)
MODULES=(http/parser_c codecs/codec_c codecs/json_c)  # package/module
[[ "${1:-}" == "--" ]] && shift

WORK="$(mktemp -d "${TMPDIR:-/tmp}/lite-serving-sanitizers.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
stage="$WORK/stage"
mkdir -p "$stage/lite_serving" "$WORK/c"
(cd "$HERE" && find lite_serving -name "*.py" -exec cp --parents {} "$stage/" \;)
cp -r "$HERE/tests" "$HERE/pyproject.toml" "$stage/"
(cd "$HERE" && cp -r --parents examples/echo "$stage/")   # tests/support reads the echo predictor
find "$stage" -name __pycache__ -prune -exec rm -rf {} +

read -r include suffix < <("$PYTHON" -c \
    "import sysconfig as s; print(s.get_paths()['include'], s.get_config_var('EXT_SUFFIX'))")
for module in "${MODULES[@]}"; do
    echo "== $module: cythonized, compiled with -fsanitize=address,undefined" >&2
    "$PYTHON" -m cython -3 --module-name "lite_serving.${module/\//.}" -o "$WORK/c/${module#*/}.c" \
        "$HERE/_speedups/${module#*/}.pyx"
    "$CC" -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
        -fno-sanitize-recover=all -I"$include" -o "$stage/lite_serving/$module$suffix" \
        "$WORK/c/${module#*/}.c"
done

echo "== ${TESTS[*]} against that build" >&2
cd "$stage"
LD_PRELOAD="$("$CC" -print-file-name=libasan.so):$("$CC" -print-file-name=libubsan.so)" \
PYTHONMALLOC=malloc PYTHONPATH="$stage" PYTHONDONTWRITEBYTECODE=1 \
LITE_SERVING_REQUIRE_COMPILED=1 \
ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:${ASAN_OPTIONS:-}" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
    "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys "${TESTS[@]}" "$@"
