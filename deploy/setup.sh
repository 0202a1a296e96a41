#!/bin/sh
# deploy/setup.sh: install every Debian 12 package grist's build, tests and
# Python examples need. Idempotent; run as root or with sudo available.
#
#   sh deploy/setup.sh            # install what is missing
#   GRIST_SETUP_CHECK=1 sh deploy/setup.sh   # only report what is missing (exit 1 if any)
#   GRIST_SETUP_CONTAINER=1 sh deploy/setup.sh  # also podman, buildah and mmdebstrap
#                                               # (deploy/container/build.sh)
set -eu

PKGS="
build-essential pkg-config meson ninja-build
libuv1-dev libhttp-parser-dev libjansson-dev libssl-dev openssl libsystemd-dev
libgrpc-dev protobuf-compiler-grpc
libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
libopenblas-dev liblapacke-dev
check valgrind clang clang-format
python3 python3-torch python3-grpcio python3-protobuf python3-numpy
python3-matplotlib python3-sklearn python3-yaml
prometheus chromium systemd
"
if [ "${GRIST_SETUP_CONTAINER:-0}" = 1 ]; then
    PKGS="$PKGS podman buildah mmdebstrap uidmap fuse-overlayfs slirp4netns"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "setup: all packages present"
    exit 0
fi

if [ "${GRIST_SETUP_CHECK:-0}" = 1 ]; then
    echo "setup: missing:$missing"
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "setup: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
echo "setup: done"
