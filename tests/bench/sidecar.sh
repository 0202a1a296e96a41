#!/bin/sh
# tests/bench/sidecar.sh: gristd against a plain Python sidecar (not part of
# .ci/run). Both serve the same wire messages from the same load generator
# (bench-daemon --ingest, 8 groups, m = 1024, default policy), in the same
# run, alternating; the table gives each one's process CPU per worker-step
# and the ratio.
#   sh tests/bench/sidecar.sh [STEPS [RATE [ROUNDS]]]   (default 300 100 2)
# The Python sidecar (tests/bench/py_sidecar.py: grpcio + NumPy, one BLAS
# thread like gristd) does less per step than gristd, so the ratio favours it.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}
STEPS=${1:-300}
RATE=${2:-100}
ROUNDS=${3:-2}
[ -x "$BUILD/tests/bench-daemon" ] || { echo "sidecar.sh: build first (ninja -C $BUILD)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/py" <<EOS
#!/bin/sh
export PYTHONPATH="$BUILD/proto" OPENBLAS_NUM_THREADS=1
exec /usr/bin/python3 "$ROOT/tests/bench/py_sidecar.py" "\$@"
EOS
chmod +x "$tmp/py"
echo "# gristd against a Python sidecar"
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%d)"
echo "Command: sh tests/bench/sidecar.sh $STEPS $RATE $ROUNDS ($STEPS steps per stream at $RATE steps/s; 1 x 1 and 2 x 8 streams)"
echo
r=1
while [ "$r" -le "$ROUNDS" ]; do
    GRISTD="$BUILD/daemon/gristd" "$BUILD/tests/bench-daemon" --ingest "$STEPS" "$RATE" >"$tmp/g$r"
    GRISTD="$tmp/py" "$BUILD/tests/bench-daemon" --ingest "$STEPS" "$RATE" >"$tmp/p$r"
    r=$((r + 1))
done
echo "| round | jobs x workers | worker-steps/s gristd | worker-steps/s Python | gristd CPU us per worker-step | Python CPU us per worker-step | Python / gristd |"
echo "|---|---|---|---|---|---|---|"
r=1
while [ "$r" -le "$ROUNDS" ]; do
    grep '^| [0-9]' "$tmp/g$r" >"$tmp/gl"
    grep '^| [0-9]' "$tmp/p$r" >"$tmp/pl"
    paste -d'|' "$tmp/gl" "$tmp/pl" | awk -F'|' -v r="$r" '{
        printf "| %d | %s | %s | %s | %s | %s | %.1fx |\n", r, $3, $5, $16, $9, $20, $20 / $9 }' | sed 's/  */ /g'
    r=$((r + 1))
done
