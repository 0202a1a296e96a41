#!/bin/sh
# deploy/bootstrap.sh: everything the two README commands need before they
# run: system packages (deploy/setup.sh, only when something is missing),
# then meson configure (once) and build, into ./build (or $GRIST_BUILD).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}

if ! GRIST_SETUP_CHECK=1 sh "$ROOT/deploy/setup.sh" >/dev/null 2>&1; then
    sh "$ROOT/deploy/setup.sh"
fi

# The CUDA toolkit, when present, is not always on PATH.
if [ -x /usr/local/cuda/bin/nvcc ]; then
    PATH=/usr/local/cuda/bin:$PATH
    export PATH
fi

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" ${GRIST_MESON_ARGS:-}
fi
meson compile -C "$BUILD"
