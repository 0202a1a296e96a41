#!/bin/sh
# tests/quality/run.sh: the quality experiments of issue P5 that exist so far
# (dynamic momentum / beta1 on three tasks) around a fresh gristd.
#   sh tests/quality/run.sh [--seeds N] [--task mlp|cnn|char] [--optimizer sgd|adam]
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
exec sh "$ROOT/deploy/with-gristd.sh" /usr/bin/python3 "$ROOT/tests/quality/momentum.py" "$@"
