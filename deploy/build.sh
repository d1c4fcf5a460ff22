#!/usr/bin/env bash
# Build the image of one model directory: deploy/build.sh MODEL_DIR [IMAGE]
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/build.sh MODEL_DIR [IMAGE]

Builds deploy/container/Containerfile with this checkout as the context.
  MODEL_DIR  the model directory, inside this checkout (e.g. examples/iris): predictor.py or
             one .onnx file, the files they read, and an optional requirements.txt
  IMAGE      the image's name (default: lite-serving-<directory name>)

Environment:
  BASE        base image of every stage (default: the Containerfile's official Python slim image)
  EXTRAS      lite_serving extras to install, e.g. onnx
  ENGINE      the build command: podman, docker or buildah, with any global options
              (default: podman when installed, else docker)
  BUILD_OPTS  more options for the build, e.g. "--network host"
  PIP_CA      CA bundle that pip inside the build needs (default: $PIP_CERT, else pip's own
              `cert` setting, if any); passed as a build secret, never stored in the image

Then run it:  podman run --rm -p 8080:8080 IMAGE   (the port inside: LITE_SERVING_PORT, 8080)
EOF
}

if [[ $# -lt 1 || $# -gt 2 || $1 == -h || $1 == --help ]]; then
    usage >&2
    [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && exit 0
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ! -d $1 ]]; then
    echo "deploy/build.sh: $1 is not a directory; give the model directory (e.g. examples/iris)" >&2
    exit 2
fi
model_dir=$(realpath --relative-to="$root" "$1")
if [[ $model_dir == .. || $model_dir == ../* || $model_dir == . ]]; then
    echo "deploy/build.sh: $1 must be a directory inside $root (the build context)" >&2
    exit 2
fi
name=$(basename "$model_dir" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9._\n-' '-')
image=${2:-lite-serving-$name}

if [[ -n ${ENGINE:-} ]]; then
    read -r -a engine <<< "$ENGINE"
elif command -v podman > /dev/null; then
    engine=(podman)
elif command -v docker > /dev/null; then
    engine=(docker)
else
    echo "deploy/build.sh: neither podman nor docker is installed; install one, or set ENGINE" >&2
    exit 2
fi
case $(basename "${engine[0]}") in
    podman) build=("${engine[@]}" build --format docker) ;;
    buildah) build=("${engine[@]}" bud --format docker) ;;
    *) build=("${engine[@]}" build) ;;
esac

args=(-f "$root/deploy/container/Containerfile" --build-arg "MODEL_DIR=$model_dir" -t "$image")
[[ -n ${BASE:-} ]] && args+=(--build-arg "BASE=$BASE")
[[ -n ${EXTRAS:-} ]] && args+=(--build-arg "EXTRAS=$EXTRAS")

ca=${PIP_CA:-${PIP_CERT:-}}
if [[ -z $ca ]] && command -v python3 > /dev/null; then
    ca=$(python3 -m pip config get global.cert 2> /dev/null || true)
    ca=${ca//\'/}
fi
if [[ -n $ca ]]; then
    if [[ ! -f $ca ]]; then
        echo "deploy/build.sh: the CA bundle $ca does not exist; set PIP_CA to a file" >&2
        exit 2
    fi
    args+=(--secret "id=pip-ca,src=$ca")
fi

read -r -a extra <<< "${BUILD_OPTS:-}"
started=$SECONDS
"${build[@]}" "${args[@]}" "${extra[@]}" "$root"
size=$("${engine[@]}" image inspect --format '{{.Size}}' "$image" 2> /dev/null || true)
echo "built $image from $model_dir in $((SECONDS - started)) s${size:+, $((size / 1000000)) MB}"
echo "run it: ${engine[0]} run --rm -p 8080:8080 $image"
