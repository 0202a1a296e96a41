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
# Each step's own exit status counts (a pipe into tee would report tee's):
# 77 is a skip (no device), anything else non-zero a failure. The script
# exits 1 on any failure, 77 when every step skipped, 0 otherwise.
fails=0 skips=0 steps=0
step() { # OUTFILE CMD...: run CMD, append its output to OUTFILE and stdout
    out=$1
    shift
    steps=$((steps + 1))
    set +e
    "$@" >"$out.part" 2>&1
    s=$?
    set -e
    cat "$out.part" >>"$out"
    cat "$out.part"
    rm -f "$out.part"
    if [ "$s" -eq 77 ]; then
        skips=$((skips + 1))
        echo "gpu: skipped (77): $*"
    elif [ "$s" -ne 0 ]; then
        fails=$((fails + 1))
        echo "gpu: FAILED ($s): $*"
    fi
}
: >"$OUTDIR/checkasm-cuda.txt"
: >"$OUTDIR/bench-gpu.md"
step "$OUTDIR/checkasm-cuda.txt" "$B/tests/checkasm" --backend cuda --full --seed 1
step "$OUTDIR/checkasm-cuda.txt" "$B/tests/test-sketch-cuda"
step "$OUTDIR/checkasm-cuda.txt" "$B/tests/checkasm" --backend all --seed 2
step "$OUTDIR/bench-gpu.md" "$B/tests/bench-kernels" --full
echo "gpu: $steps steps, $fails failed, $skips skipped"
[ "$fails" -eq 0 ] || exit 1
[ "$skips" -lt "$steps" ] || exit 77
exit 0
