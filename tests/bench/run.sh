#!/bin/sh
# tests/bench/run.sh: the kernels benchmark command (not part of .ci/run).
#   sh tests/bench/run.sh [--quick] [--full]
# Builds, runs bench-kernels (C, every usable backend) and the same per-step
# math in NumPy, and prints markdown tables with the C/NumPy ratio.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
echo "# grist kernels benchmark"
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%d)"
echo "Command: sh tests/bench/run.sh $*"
echo
OPENBLAS_NUM_THREADS=1 "$BUILD/tests/bench-kernels" "$@" | tee /tmp/grist-bench.$$
steps=1000
case " $* " in *" --quick "*) steps=200 ;; esac
np=$(OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$ROOT/tests/bench/numpy_step.py" $steps)
echo
echo "## Whole per-step update against NumPy (same math, m_cov 256, 1 thread)"
echo
echo "| implementation | us/step median | min | max | speed-up over NumPy |"
echo "|---|---|---|---|---|"
set -- $np
npmed=$2
echo "| NumPy | $2 | $3 | $4 | 1.0x |"
grep -E '^\| (ref|cpu|cuda) \| m_cov 256' /tmp/grist-bench.$$ | while IFS='|' read -r _ be cov med mn mx _; do
    echo "| grist $(echo $be) | $(echo $med) | $(echo $mn) | $(echo $mx) | $(echo "$npmed $med" | awk '{printf "%.1fx", $1 / $2}') |"
done
rm -f /tmp/grist-bench.$$
