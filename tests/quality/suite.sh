#!/bin/sh
# tests/quality/suite.sh --out DIR [--quick] [--jobs N] [suite.py options]:
# the wide quality suite (tests/quality/suite.py: tasks x optimizers x lr
# multipliers x start betas x seeds; fixed-beta sweeps, grist from each
# start, YellowFin for the SGD family) around one fresh gristd, started the
# way run.sh starts it (deploy/with-gristd.sh). Raw results go to
# DIR/results.jsonl (resumable: rerun the same command to finish an
# interrupted suite), the verdict tables to DIR/verdict.md
# (tests/quality/suite_verdict.py). Smoke test, ~30 s:
#   sh tests/quality/suite.sh --quick --out /tmp/suite-quick
# Every grist run is its own short job; gristd drops a job 60 s after its
# worker left (instead of its default hour), so a long suite stays far
# below --max-jobs. Extra gristd options: GRISTD_ARGS="...".
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
GRISTD_ARGS="--idle-expiry 60 ${GRISTD_ARGS:-}"
export GRISTD_ARGS
exec sh "$ROOT/deploy/with-gristd.sh" /usr/bin/python3 "$ROOT/tests/quality/suite.py" "$@"
