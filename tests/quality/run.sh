#!/bin/sh
# tests/quality/run.sh: the quality experiments of issue P5 that exist so far
# (dynamic momentum / beta1 on the digits MLP). Starts gristd, runs, stops it.
#   sh tests/quality/run.sh [--seeds N] [--optimizer sgd|adam]
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/ready"
"$BUILD/daemon/gristd" --listen 127.0.0.1:0 --ready-fd 3 --log-level warn 3>"$tmp/ready" &
pid=$!
read -r proto addr < "$tmp/ready"
GRIST_LIB="$BUILD/client/libgrist.so" /usr/bin/python3 "$ROOT/tests/quality/momentum.py" "$addr" "$@"
kill -TERM "$pid"
wait "$pid"
