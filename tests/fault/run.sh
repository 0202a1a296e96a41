#!/bin/sh
# gristd's fault and load suite, at full size (minutes; the soak alone takes
# --soak-min, 30 by default). Not part of .ci/run: its quick part is the meson
# test fault-quick (`meson test -C build fault-quick`).
#
#   sh tests/fault/run.sh [--quick] [--soak-min N] [kill9 sigstop midmessage storm soak world]
#
# Each item prints a table of figures and PASS or FAIL (tests/fault/README.md).
set -e
cd "$(dirname "$0")/../.."
[ -f build/build.ninja ] || meson setup build
ninja -C build >/dev/null
PYTHONPATH=build/proto GRIST_LIB=build/client/libgrist.so \
    exec /usr/bin/python3 tests/fault/fault.py build/daemon/gristd "$@"
