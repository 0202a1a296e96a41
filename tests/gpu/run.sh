#!/bin/sh
# tests/gpu/run.sh: the prepared script for a machine with an NVIDIA GPU and
# the CUDA toolkit, but none of Debian's -dev packages (the device machine).
# Builds kernels/ on its own (ref + cuda backends; cpu too when OpenBLAS is
# there), runs the cross-check on the device at full sizes, then the kernels
# benchmark. Results go to stdout and, when $OUT is set, to $OUT/.
#   sh tests/gpu/run.sh
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${GRIST_GPU_BUILD:-$ROOT/build-gpu}
OUTDIR=${OUT:-/tmp}
PATH=/usr/local/cuda/bin:$PATH
export PATH
ARCH=${GRIST_GPU_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 || echo 9.0)}
[ -n "$ARCH" ] || ARCH=9.0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ ! -f "$B/build.ninja" ]; then
    meson setup "$B" "$ROOT" -Dkernels_only=true -Dcuda=enabled -Dgpu_arch="$ARCH" -Dbuildtype=release
fi
ninja -C "$B"
rc=0
"$B/tests/checkasm" --backend cuda --full --seed 1 2>&1 | tee "$OUTDIR/checkasm-cuda.txt" || rc=1
"$B/tests/test-sketch-cuda" 2>&1 | tee -a "$OUTDIR/checkasm-cuda.txt" || rc=1
"$B/tests/checkasm" --backend all --seed 2 2>&1 | tee -a "$OUTDIR/checkasm-cuda.txt" || rc=1
"$B/tests/bench-kernels" --full 2>&1 | tee "$OUTDIR/bench-gpu.md" || rc=1
exit $rc
