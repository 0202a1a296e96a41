#!/bin/sh
# deploy/run.sh: the README's run command. Sets everything up and builds
# (deploy/bootstrap.sh), then, around a gristd on a free loopback port
# (deploy/with-gristd.sh: health check first, SIGTERM and exit 0 checked
# after), trains the digits example twice (fixed momentum, then attached),
# prints what grist did (momentum and lr_scale per group over time, accuracy
# against the fixed run) and writes the plot digits_sgd.png.
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
exec sh "$ROOT/deploy/with-gristd.sh" /usr/bin/python3 "$ROOT/client/examples/digits_sgd.py" \
    --plot "${GRIST_PLOT:-digits_sgd.png}"
