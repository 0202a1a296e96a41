#!/bin/sh
# tests/bench/client.sh: the client overhead benchmark (not part of .ci/run),
# run twice on a machine with 2+ cores:
#   1. gristd on the last core, the training loop on the others: the
#      daemon's own work (it solves and pushes while the benchmark trains)
#      is not counted as client overhead, and no core is spare;
#   2. nothing pinned: libgrist's sketch thread (async_sketch) may use a
#      core the one-thread training loop leaves idle, shared with gristd.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
n=$(nproc)
echo "# grist client overhead ($n cores, $(date -u +%Y-%m-%d)); command: sh tests/bench/client.sh"
if [ "$n" -ge 2 ]; then
    echo
    echo "## gristd on core $((n - 1)), training on cores 0-$((n - 2))"
    echo
    GRIST_BENCH_LABEL=pinned GRISTD_CPUS=$((n - 1)) sh "$ROOT/deploy/with-gristd.sh" taskset -c "0-$((n - 2))" \
        /usr/bin/python3 "$ROOT/tests/bench/bench_client.py"
fi
echo
echo "## nothing pinned"
echo
GRIST_BENCH_LABEL=unpinned exec sh "$ROOT/deploy/with-gristd.sh" /usr/bin/python3 "$ROOT/tests/bench/bench_client.py"
