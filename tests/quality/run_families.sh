#!/bin/sh
# tests/quality/run_families.sh: quality experiment 1 (stateless families),
# no daemon needed: grist's family solver through libgrist. Writes
# docs/quality/families_*.png and prints the tables of docs/QUALITY.md.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
OPENBLAS_NUM_THREADS=1 exec /usr/bin/python3 "$ROOT/tests/quality/families.py" "$@"
