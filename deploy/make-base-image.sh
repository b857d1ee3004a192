#!/bin/sh
# Makes the image's Debian base without a container registry: a minimal bookworm root filesystem from the Debian
# mirror (debootstrap), imported into podman as docker.io/library/debian:bookworm-slim, the name the Dockerfile
# expects. Only for machines that cannot pull it; needs root, debootstrap and podman.
set -eu
name=${1:-docker.io/library/debian:bookworm-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$name"
