#!/bin/sh
# deploy/with-gristd.sh CMD [ARGS...]: start the built gristd on a free
# loopback port (readiness through a fifo, never a sleep), check
# grpc.health.v1, run CMD with GRIST_ADDRESS and GRIST_LIB set, then stop
# gristd with SIGTERM. Exit status: CMD's, or 1 when gristd did not exit 0.
# Extra gristd options: GRISTD_ARGS="--compute-threads 1 ...".
# GRISTD_CPUS="1": run gristd on those cores only (taskset), e.g. to keep a
# benchmark's training loop and the daemon apart on a small machine.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/ready"
# shellcheck disable=SC2086
${GRISTD_CPUS:+taskset -c "$GRISTD_CPUS"} "$BUILD/daemon/gristd" --listen 127.0.0.1:0 --ready-fd 3 --log-level warn ${GRISTD_ARGS:-} 3>"$tmp/ready" &
pid=$!
read -r proto addr < "$tmp/ready"
echo "gristd (pid $pid) listening: $proto $addr"
# Health/Check with an empty request; SERVING is the bytes 08 01
/usr/bin/python3 - "$addr" <<'PY'
import sys, grpc
resp = grpc.insecure_channel(sys.argv[1]).unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
print("health check:", "SERVING" if resp == b"\x08\x01" else resp)
PY
rc=0
GRIST_ADDRESS=$addr GRIST_LIB="$BUILD/client/libgrist.so" "$@" || rc=$?
kill -TERM "$pid"
drc=0
wait "$pid" || drc=$?
echo "gristd stopped with SIGTERM, exit status $drc"
[ "$drc" -eq 0 ] || rc=1
exit $rc
