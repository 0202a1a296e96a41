#!/bin/sh
# deploy/run.sh: the README's run command. Sets everything up, builds, and
# runs gristd in the foreground with its defaults (Ctrl-C stops it cleanly).
# Extra arguments go to gristd, e.g. sh deploy/run.sh --listen 127.0.0.1:0
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${GRIST_BUILD:-$ROOT/build}
sh "$ROOT/deploy/bootstrap.sh"
exec "$BUILD/daemon/gristd" "$@"
