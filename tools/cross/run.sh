#!/usr/bin/env bash
# The compiled modules (_speedups/*.pyx) built for ARM and their in-process tests run there,
# under qemu-user, on an x86_64 Debian host.
#
#   tools/cross/run.sh [--install] [armhf] [arm64] [-- PYTEST_ARGS...]
#
# For each architecture (both when none is named):
#   1. a Debian bookworm root filesystem (mmdebstrap --variant=extract: nothing is configured,
#      no binfmt needed) with python3.11 and its headers, numpy, msgpack and pytest, plus orjson
#      from its PyPI wheel for that CPU (Debian has no orjson package) and hypothesis from PyPI
#      (the tests use strategies newer than Debian's);
#   2. the .pyx cythonized on the host (Cython's C is the same for every CPU and Python 3
#      version) and compiled by Debian's cross gcc against the root filesystem's Python headers,
#      with -Wall -Wextra: a warning pointing to our code fails the run (those in Cython's
#      runtime support code are listed, not counted);
#   3. the in-process tests of the compiled modules (parser, its fuzzers, codec, json_c) under
#      `qemu-ARCH-static -L ROOT ROOT/usr/bin/python3.11 -m pytest`, compiled modules required.
#
# Needs: mmdebstrap, qemu-user-static, gcc-arm-linux-gnueabihf, gcc-aarch64-linux-gnu (Debian
# packages) and Cython for the host Python ($PYTHON, default python3). --install (or CI=true,
# as root) installs what is missing. The root filesystems and wheels are cached under
# $LITE_SERVING_CROSS_CACHE (default /var/cache/lite-serving-cross, or
# ~/.cache/lite-serving-cross when that is not writable): the first run takes a few minutes
# more, later ones reuse them. LITE_SERVING_FUZZ_EXAMPLES (default 50 here: emulation is slow)
# sets how many hypothesis examples each property test runs.
# Exit status: 0 all passed, 1 a test or a build failed, 3 a tool is missing.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
SUITE=bookworm
ROOT_PACKAGES=python3.11,libpython3.11-dev,python3-numpy,python3-msgpack,python3-pytest,python3-hypothesis
TESTS=(tests/http/test_parser.py tests/http/test_parser_fuzz.py tests/codecs/test_codec.py tests/codecs/test_json_plain.py
       tests/server/test_access_lines.py tests/codecs/test_msgpack_split.py)
MODULES=(http/parser_c codecs/codec_c codecs/json_c)  # package/module

install=0
[[ "${CI:-}" == "true" ]] && install=1
arches=()
pytest_args=()
while (($#)); do
    case "$1" in
        --install) install=1 ;;
        armhf|arm64) arches+=("$1") ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (armhf, arm64, --install, -- PYTEST_ARGS)" >&2; exit 2 ;;
    esac
    shift
done
((${#arches[@]})) || arches=(armhf arm64)

say() { printf '== %s\n' "$*" >&2; }

# -- tools ------------------------------------------------------------------------------------------
missing=()
for pair in mmdebstrap:mmdebstrap qemu-arm-static:qemu-user-static \
            qemu-aarch64-static:qemu-user-static arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf \
            aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if ((install)) && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    else
        echo "run.sh: needs the Debian packages: ${missing[*]}" >&2
        echo "        apt-get install ${missing[*]}   (or run.sh --install as root)" >&2
        exit 3
    fi
fi
if ! "$PYTHON" -c "import Cython" 2>/dev/null; then
    if ((install)); then
        "$PYTHON" -m pip install -q "Cython>=3.0"
    else
        echo "run.sh: needs Cython for $PYTHON: $PYTHON -m pip install 'Cython>=3.0'" >&2
        exit 3
    fi
fi

CACHE="${LITE_SERVING_CROSS_CACHE:-/var/cache/lite-serving-cross}"
if ! mkdir -p "$CACHE" 2>/dev/null || [[ ! -w "$CACHE" ]]; then
    CACHE="$HOME/.cache/lite-serving-cross"
    mkdir -p "$CACHE"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lite-serving-cross.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# -- C sources, once for every architecture -------------------------------------------------------
say "cythonizing ${MODULES[*]}"
mkdir -p "$WORK/c"
for module in "${MODULES[@]}"; do
    "$PYTHON" -m cython -3 --module-name "lite_serving.${module/\//.}" \
        -o "$WORK/c/${module#*/}.c" "$HERE/_speedups/${module#*/}.pyx"
done

# Warnings that point to our code: inside the module's implementation (between Cython's
# "Implementation of" and "Runtime support code" marks), in our own verbatim C (ls_*), or naming
# our functions and variables.
our_warnings() {  # C_FILE WARNINGS_FILE
    awk -v c_file="$1" '
        FNR == NR {
            if (index($0, "/* Implementation of \"lite_serving.")) from = FNR
            if (index($0, "/* --- Runtime support code --- */")) to = FNR
            text[FNR] = $0
            next
        }
        /: warning: / {
            split($0, at, ":")
            line = at[2] + 0
            ours = (line >= from && line < to) || text[line] ~ /(^|[^A-Za-z_])(ls_|LS_)/ \
                   || $0 ~ /__pyx_[vf]_12lite_serving/ || text[line] ~ /__pyx_[vf]_12lite_serving/
            if (ours) print
        }' "$1" "$2"
}

rootfs() {  # ARCH TRIPLET -> the root filesystem, made once
    local arch=$1 triplet=$2 root="$CACHE/$SUITE-$1"
    if [[ ! -e "$root/.complete" ]]; then
        say "$arch: making the $SUITE root filesystem in $root"
        rm -rf "$root" "$root.new"
        mmdebstrap --quiet --variant=extract --architectures="$arch" --include="$ROOT_PACKAGES" \
            "$SUITE" "$root.new" >&2
        # numpy's BLAS and LAPACK are chosen by update-alternatives, which extraction does not run
        ln -sf blas/libblas.so.3 "$root.new/usr/lib/$triplet/libblas.so.3"
        ln -sf lapack/liblapack.so.3 "$root.new/usr/lib/$triplet/liblapack.so.3"
        touch "$root.new/.complete"
        mv "$root.new" "$root"
    fi
    printf '%s\n' "$root"
}

pypi_site() {  # ARCH WHEEL_PLATFORM -> a directory holding orjson for that CPU, and hypothesis
    local site="$CACHE/site-$1"
    if [[ ! -e "$site/.complete" ]]; then
        say "$1: orjson and hypothesis wheels for $2"
        rm -rf "$site"
        "$PYTHON" -m pip install -q --no-deps --only-binary=:all: --platform "$2" \
            --python-version 3.11 --implementation cp --abi cp311 --target "$site" \
            orjson hypothesis
        touch "$site/.complete"
    fi
    printf '%s\n' "$site"
}

status=0
for arch in "${arches[@]}"; do
    case "$arch" in
        armhf) triplet=arm-linux-gnueabihf; qemu=qemu-arm-static; wheel=manylinux_2_17_armv7l ;;
        arm64) triplet=aarch64-linux-gnu; qemu=qemu-aarch64-static; wheel=manylinux_2_17_aarch64 ;;
    esac
    root="$(rootfs "$arch" "$triplet")"
    site="$(pypi_site "$arch" "$wheel")"

    # the package as pip would install it: its Python files, the compiled modules, the tests
    stage="$WORK/$arch"
    mkdir -p "$stage/lite_serving"
    (cd "$HERE" && find lite_serving -name "*.py" -exec cp --parents {} "$stage/" \;)
    cp -r "$HERE/tests" "$HERE/pyproject.toml" "$stage/"
    (cd "$HERE" && cp -r --parents examples/echo "$stage/")   # tests/support reads the echo predictor
    find "$stage" -name __pycache__ -prune -exec rm -rf {} +

    say "$arch: compiling with $triplet-gcc -Wall -Wextra"
    suffix=".cpython-311-$triplet.so"
    ours=0
    for module in "${MODULES[@]}"; do
        log="$WORK/$arch-${module#*/}.log"
        if ! "$triplet-gcc" --sysroot="$root" -I"$root/usr/include/python3.11" \
                -shared -fPIC -O3 -fwrapv -DNDEBUG -Wall -Wextra \
                -o "$stage/lite_serving/$module$suffix" "$WORK/c/${module#*/}.c" 2>"$log"; then
            cat "$log" >&2
            echo "run.sh: $arch: $module does not compile" >&2
            exit 1
        fi
        total=$(grep -c ': warning: ' "$log" || true)
        mapfile -t mine < <(our_warnings "$WORK/c/${module#*/}.c" "$log")
        echo "   $module: $total warnings, ${#mine[@]} in our code" >&2
        if ((${#mine[@]})); then
            printf '     %s\n' "${mine[@]}" >&2
            ours=1
        fi
    done

    say "$arch: ${TESTS[*]} under $qemu"
    set +e
    (cd "$stage" && env -i PATH=/usr/bin:/bin HOME="$WORK" LANG=C.UTF-8 \
        PYTHONPATH="$stage:$site" PYTHONDONTWRITEBYTECODE=1 LITE_SERVING_REQUIRE_COMPILED=1 \
        LITE_SERVING_FUZZ_EXAMPLES="${LITE_SERVING_FUZZ_EXAMPLES:-50}" \
        "$qemu" -L "$root" "$root/usr/bin/python3.11" -m pytest -q -p no:cacheprovider \
        "${TESTS[@]}" "${pytest_args[@]}")
    tests=$?
    set -e
    if ((tests)); then
        echo "run.sh: $arch: the tests failed (pytest exit $tests)" >&2
        status=1
    fi
    if ((ours)); then
        echo "run.sh: $arch: the compiler warns about our code" >&2
        status=1
    fi
done
exit "$status"
