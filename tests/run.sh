#!/bin/sh
# tests/run.sh: the README's test command. Sets everything up, builds, runs
# the suites unit, kernels, integration, cluster and gpu (gpu tests skip without a
# device), and ends with the line "N passed, N failed, N skipped" computed
# from meson's testlog.json. Exit status: 0 only when nothing failed.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}
sh "$ROOT/deploy/bootstrap.sh"

rc=0
meson test -C "$BUILD" --print-errorlogs --num-processes 2 \
    --suite unit --suite kernels --suite integration --suite cluster --suite gpu "$@" || rc=$?

/usr/bin/python3 - "$BUILD/meson-logs/testlog.json" <<'PY' || rc=1
import json, sys
passed = failed = skipped = 0
with open(sys.argv[1]) as f:
    for line in f:
        if not line.strip():
            continue
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
PY
exit $rc
