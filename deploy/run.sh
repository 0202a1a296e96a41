#!/bin/sh
# deploy/run.sh: the README's run command. Sets everything up and builds
# (deploy/bootstrap.sh), starts gristd on a free loopback port, trains the
# digits example twice (fixed momentum, then attached to gristd), prints what
# grist did (momentum per group over time, accuracy against the fixed run)
# and writes the plot digits_sgd.png, then stops gristd with SIGTERM and
# checks that it exited 0.
#
#   sh deploy/run.sh                # the main job
#   sh deploy/run.sh --serve [ARGS] # only gristd, in the foreground (ARGS go to gristd)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}
sh "$ROOT/deploy/bootstrap.sh"

if [ "${1:-}" = "--serve" ]; then
    shift
    exec "$BUILD/daemon/gristd" "$@"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/ready"
"$BUILD/daemon/gristd" --listen 127.0.0.1:0 --ready-fd 3 --log-level warn 3>"$tmp/ready" &
pid=$!
read -r proto addr < "$tmp/ready"
echo "gristd (pid $pid) listening: $proto $addr"
# grpc.health.v1.Health/Check with an empty request; SERVING is the bytes 08 01
/usr/bin/python3 - "$addr" <<'PY'
import sys, grpc
ch = grpc.insecure_channel(sys.argv[1])
check = ch.unary_unary("/grpc.health.v1.Health/Check")
resp = check(b"", timeout=10)
print("health check:", "SERVING" if resp == b"\x08\x01" else resp)
PY

rc=0
GRIST_LIB="$BUILD/client/libgrist.so" /usr/bin/python3 "$ROOT/client/examples/digits_sgd.py" \
    --address "$addr" --plot "${GRIST_PLOT:-digits_sgd.png}" || rc=$?

kill -TERM "$pid"
drc=0
wait "$pid" || drc=$?
echo "gristd stopped with SIGTERM, exit status $drc"
[ "$drc" -eq 0 ] || rc=1
exit $rc
