#!/bin/sh
# deploy/container/build.sh: the Debian 12 base image from Debian's mirror
# (mmdebstrap, imported into podman), then the gristd image from
# deploy/container/Containerfile. Needs podman and mmdebstrap (deploy/setup.sh
# with GRIST_SETUP_CONTAINER=1 installs them). Then a health check against a
# running container.
#   sh deploy/container/build.sh [TAG]      # default localhost/gristd:latest
set -eu
cd "$(dirname "$0")/../.."
tag=${1:-localhost/gristd:latest}
base=localhost/debian-bookworm:latest
if ! podman image exists "$base"; then
    echo "build: making $base with mmdebstrap (Debian's mirror only)"
    tmp=$(mktemp -d)
    mmdebstrap --variant=apt --components=main bookworm "$tmp/rootfs.tar"
    podman import "$tmp/rootfs.tar" "$base"
    rm -rf "$tmp"
fi
# The build context is the checkout without build outputs (.containerignore).
# buildah's chroot isolation needs no OCI runtime, so the image also builds
# inside a container; docker format keeps the HEALTHCHECK.
buildah bud --isolation chroot --format docker --ulimit "nofile=$(ulimit -n):$(ulimit -n)" \
    --build-arg BASE="$base" -f deploy/container/Containerfile -t "$tag" .
podman image inspect "$tag" --format 'image {{.Id}}: {{.Size}} bytes, user {{.Config.User}}'
# Run it and ask its health: with podman when the machine allows containers;
# where the OCI runtime is refused (a machine that is itself an unprivileged
# container), the image's own filesystem is run under chroot as its user,
# and this says so.
name=gristd-check-$$
if podman run -d --rm --name "$name" "$tag" >/dev/null 2>&1; then
    trap 'podman rm -f "$name" >/dev/null 2>&1 || true' EXIT
    ok=0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if podman exec "$name" /usr/local/bin/gristctl --timeout 2 health; then
            ok=1
            break
        fi
        sleep 1
    done
    [ "$ok" = 1 ] || { echo "build: the container does not answer its health check"; exit 1; }
    user=$(podman exec "$name" id -u)
    how="podman run"
else
    echo "build: podman cannot run containers here ($(podman run --rm "$tag" --version 2>&1 | tail -1)); checking the image under chroot instead"
    ctr=$(buildah from "$tag")
    mnt=$(buildah mount "$ctr")
    trap 'kill "$pid" 2>/dev/null; buildah umount "$ctr" >/dev/null; buildah rm "$ctr" >/dev/null' EXIT
    port=$((20000 + $$ % 20000))
    chroot --userspec=10001:10001 "$mnt" /usr/local/bin/gristd --listen "127.0.0.1:$port" \
        --log-level warn &
    pid=$!
    ok=0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if chroot --userspec=10001:10001 "$mnt" /usr/local/bin/gristctl \
            --address "127.0.0.1:$port" --timeout 2 health; then
            ok=1
            break
        fi
        sleep 1
    done
    [ "$ok" = 1 ] || { echo "build: the image's gristd does not answer its health check"; exit 1; }
    user=$(podman image inspect "$tag" --format '{{.Config.User}}' | cut -d: -f1)
    how="chroot into the image (no container runtime here)"
fi
[ "$user" = 10001 ] || { echo "build: the image runs as uid $user, not 10001"; exit 1; }
echo "build: $tag serves (gristctl health: SERVING) as uid $user, checked by $how"
