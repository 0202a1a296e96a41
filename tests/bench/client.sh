#!/bin/sh
# tests/bench/client.sh: the client overhead benchmark (not part of .ci/run).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
sh "$ROOT/deploy/bootstrap.sh" >/dev/null
echo "# grist client overhead ($(nproc) cores, $(date -u +%Y-%m-%d)); command: sh tests/bench/client.sh"
echo
exec sh "$ROOT/deploy/with-gristd.sh" /usr/bin/python3 "$ROOT/tests/bench/bench_client.py"
