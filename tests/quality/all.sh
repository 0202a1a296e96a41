#!/bin/sh
# tests/quality/all.sh [SECTION ...]: every quality table and plot of
# docs/QUALITY.md (not part of .ci/run). Each section writes its raw tables
# to docs/quality/raw/SECTION.md; docs/quality/results.md is then rebuilt from
# all the raw files. With no argument every section runs, in this order
# (times on the project's 2-vCPU machine, one section at a time):
#
#   families   experiment 1, stateless families, PNG plots        ~2.5 min
#   digits     fixed beta sweeps + grist, digits MLP/CNN, SGD/Adam  ~3 min
#   char       the same for the character GRU, 5 seeds             ~35 min
#   lr         3-point lr sweep (x0.5, x2 of the default lr)       ~30 min
#   noise      2-rank DDP: noise_correction auto(workers)/acf/off  ~30 min
#   coupling   lr_coupling energy / dc (none is the default)       ~15 min
#   coupling-lr  energy at the lr section's learning rates         ~8 min
#   cadence    solve_every 5 / 10 / 25 / 50 with dc coupling       ~28 min
#   selection  mode=global, the paper's list, j_ema               ~20 min
#   probe      the acf rule against a direct noise measurement     ~0.5 min
#
# Measured 2026-11-28, lr and noise at the same time: 39 and 38 min.
# results.md ends with P5's acceptance computed from the raw tables
# (tests/quality/verdict.py).
#
# QUALITY_JOBS=2 runs the two halves of char and lr at the same time; two
# sections may also run at once in two shells (the machine has 2 cores and
# each run is single-threaded; the daemon then answers a little later in
# steps, which is within the runs' noise).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
RAW="$ROOT/docs/quality/raw"
mkdir -p "$RAW"
Q() { sh "$ROOT/tests/quality/run.sh" "$@" 2>/dev/null | grep -v '^gristd\|^health'; }
# one line per grist run: "TASK OPT LABEL: | grist (from 0.9) | mean ± std | steps | n |"
G() {
    label=$1
    shift
    for task in mlp cnn char; do
        for opt in sgd adam; do
            Q --seeds 5 --task $task --optimizer $opt --grist-only "$@" |
                grep "grist (from" | sed "s/^/$task $opt $label: /"
        done
    done
}
LR_SGD="mlp:0.025,0.1 cnn:0.025,0.1 char:0.25,1.0"
LR_ADAM="mlp:0.001,0.004 cnn:0.001,0.004 char:0.0025,0.01"

# the lr tables of one optimizer
lr_tables() {
    if [ "$1" = sgd ]; then list=$LR_SGD; else list=$LR_ADAM; fi
    for item in $list; do
        task=${item%%:*}
        seeds=5
        [ "$task" = char ] && seeds=2
        for lr in $(echo "${item#*:}" | tr , ' '); do
            echo
            Q --seeds $seeds --task "$task" --optimizer "$1" --lr "$lr"
        done
    done
}
# par A B: run the commands A and B, at the same time when QUALITY_JOBS=2;
# the output is A's then B's either way
par() {
    if [ "${QUALITY_JOBS:-1}" -ge 2 ]; then
        tmpa=$(mktemp) tmpb=$(mktemp)
        eval "$1" > "$tmpa" &
        pa=$!
        eval "$2" > "$tmpb"
        wait $pa
        cat "$tmpa" "$tmpb"
        rm -f "$tmpa" "$tmpb"
    else
        eval "$1"
        eval "$2"
    fi
}

section() {
    case $1 in
    families)
        OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "$ROOT/tests/quality/families.py" ;;
    digits)
        echo "## Fixed beta against grist at gristd's defaults: digits"
        for task in mlp cnn; do
            for opt in sgd adam; do
                echo
                Q --seeds 5 --task $task --optimizer $opt
            done
        done ;;
    char)
        echo "## Fixed beta against grist at gristd's defaults: character GRU"
        par "echo; Q --seeds 5 --task char --optimizer sgd" \
            "echo; Q --seeds 5 --task char --optimizer adam" ;;
    lr)
        echo "## Learning-rate sweep: the default lr is in the digits/char sections; here x0.5 and x2"
        echo "(5 seeds on digits, 2 on the character task)"
        par "lr_tables sgd" "lr_tables adam" ;;
    noise)
        echo "## Noise correction with 2 DDP ranks (each rank half of every batch; grist only)"
        echo
        # run with lr_coupling energy, gristd's default when this study was made
        for nc in auto acf off; do
            G "ddp-$nc" --ranks 2 --policy noise_correction=$nc --policy lr_coupling=energy
        done ;;
    coupling)
        echo "## lr coupling (grist only; none, the default, is in the digits/char sections)"
        echo
        for pol in energy dc; do
            G "$pol" --policy lr_coupling=$pol
        done ;;
    coupling-lr)
        echo "## lr coupling energy at the off-default learning rates (grist only; compare with the lr section)"
        echo
        for opt in sgd adam; do
            if [ $opt = sgd ]; then list=$LR_SGD; else list=$LR_ADAM; fi
            for item in $list; do
                task=${item%%:*}
                seeds=5
                [ "$task" = char ] && seeds=2
                for lr in $(echo "${item#*:}" | tr , ' '); do
                    Q --seeds $seeds --task "$task" --optimizer $opt --lr "$lr" --grist-only \
                        --policy lr_coupling=energy | grep "grist (from" | sed "s/^/$task $opt energy@lr=$lr: /"
                done
            done
        done ;;
    cadence)
        echo "## Selection cadence solve_every 5 / 10 / 25 / 50 (grist only; lr_coupling dc, the default when this study was made)"
        echo
        par "G every-5 --solve-every 5 --policy lr_coupling=dc; G every-10 --solve-every 10 --policy lr_coupling=dc" \
            "G every-25 --solve-every 25 --policy lr_coupling=dc; G every-50 --solve-every 50 --policy lr_coupling=dc" ;;
    selection)
        echo "## Selection options (grist only; defaults in the digits/char sections)"
        echo
        # run with lr_coupling energy, gristd's default when this study was made
        G global --policy mode=global --policy lr_coupling=energy
        G paper-list --policy candidates=0.5,0.9,0.99 --policy lr_coupling=energy
        G j_ema-0.9 --policy j_ema=0.9 --policy lr_coupling=energy ;;
    probe)
        echo "## Noise on the character stream (acf rule against a direct measurement)"
        echo
        /usr/bin/python3 "$ROOT/tests/quality/acf_probe.py" ;;
    *)
        echo "all.sh: unknown section '$1'" >&2
        return 2 ;;
    esac
}

# --report: only rebuild results.md from the raw files
if [ "${1:-}" = --report ]; then
    shift
    set -- __none
fi
[ $# -gt 0 ] || set -- families digits char lr noise coupling coupling-lr cadence selection probe
for s in "$@"; do
    [ "$s" = __none ] && continue
    start=$(date +%s)
    { section "$s"; echo; echo "(section $s: $(( $(date +%s) - start )) s, $(date -u +%Y-%m-%d), $(nproc) cores)"; } > "$RAW/$s.md.tmp"
    mv "$RAW/$s.md.tmp" "$RAW/$s.md"
    echo "section $s: $(( $(date +%s) - start )) s -> $RAW/$s.md"
done
{
    echo "# Quality results (raw); command: sh tests/quality/all.sh [SECTION ...]"
    for s in families digits char lr noise coupling coupling-lr cadence selection probe; do
        [ -f "$RAW/$s.md" ] && { echo; cat "$RAW/$s.md"; }
    done
    echo
    /usr/bin/python3 "$ROOT/tests/quality/verdict.py" "$RAW"
} > "$ROOT/docs/quality/results.md"
echo "rebuilt docs/quality/results.md (with the verdict of tests/quality/verdict.py)"
