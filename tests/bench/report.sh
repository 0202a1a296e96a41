#!/bin/sh
# tests/bench/report.sh [--quick]: every benchmark, one after the other,
# into docs/PERFORMANCE.md (not part of .ci/run; ~15 min on 2 cores).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
exec /usr/bin/python3 "$ROOT/tests/bench/report.py" "$@"
