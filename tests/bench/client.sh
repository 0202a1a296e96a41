#!/bin/sh
# tests/bench/client.sh: the client overhead benchmark (not part of .ci/run).
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
echo "# grist client overhead ($(nproc) cores, $(date -u +%Y-%m-%d)); command: sh tests/bench/client.sh"
echo
GRIST_LIB="$BUILD/client/libgrist.so" /usr/bin/python3 "$ROOT/tests/bench/bench_client.py" "$addr"
kill -TERM "$pid"
wait "$pid"
