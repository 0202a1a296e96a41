#!/bin/sh
# tests/quality/all.sh: every quality table and plot of docs/QUALITY.md in one
# run (not part of .ci/run; ~30 min on 2 cores). Raw tables go to
# docs/quality/results.md (the analysis in QUALITY.md is written by hand from
# them); plots to docs/quality/.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
OUT="$ROOT/docs/quality/results.md"
mkdir -p "$ROOT/docs/quality"
start=$(date +%s)
{
    echo "# Quality results (raw), $(date -u +%Y-%m-%d), $(nproc) cores; command: sh tests/quality/all.sh"
    echo
    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$ROOT/tests/quality/families.py"
    echo
    echo "## Dynamic momentum / beta1, gristd defaults, against fixed betas"
    for task in mlp cnn; do
        for opt in sgd adam; do
            echo
            sh "$ROOT/tests/quality/run.sh" --seeds 5 --task $task --optimizer $opt 2>/dev/null | grep -v '^gristd\|^health'
        done
    done
    for opt in sgd adam; do
        echo
        sh "$ROOT/tests/quality/run.sh" --seeds 2 --task char --optimizer $opt 2>/dev/null | grep -v '^gristd\|^health'
    done
    echo
    echo "## Option study: lr coupling (grist only, gristd's cadence)"
    for pol in dc energy; do
        for task in mlp cnn; do
            for opt in sgd adam; do
                sh "$ROOT/tests/quality/run.sh" --seeds 5 --task $task --optimizer $opt --grist-only \
                    --policy lr_coupling=$pol 2>/dev/null | grep "grist (from" | sed "s/^/$task $opt $pol: /"
            done
        done
        for opt in sgd adam; do
            sh "$ROOT/tests/quality/run.sh" --seeds 2 --task char --optimizer $opt --grist-only \
                --policy lr_coupling=$pol 2>/dev/null | grep "grist (from" | sed "s/^/char $opt $pol: /"
        done
    done
    echo
    echo "## Noise on the character stream (acf rule against a direct measurement)"
    echo
    /usr/bin/python3 "$ROOT/tests/quality/acf_probe.py"
    echo
    echo "(whole run: $(( $(date +%s) - start )) s)"
} > "$OUT"
echo "wrote $OUT in $(( $(date +%s) - start )) s"
