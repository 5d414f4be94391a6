#!/usr/bin/env bash
# Build the testbed's container image with podman (no daemon), from a Debian
# base that debootstrap makes from Debian's archive: no image registry needed.
#   scripts/build-image.sh                                   -> localhost/fwcluster (Debian 12)
#   SUITE=trixie IMAGE=localhost/fwcluster:trixie scripts/build-image.sh   (Debian 13)
# SUITE (bookworm), MIRROR (Debian's archive), IMAGE (localhost/fwcluster).
# Then, as root:
#   podman $PODMAN_OPTS run --rm --privileged --network host $RUN_OPTS localhost/fwcluster make test
# with PODMAN_OPTS and RUN_OPTS as this script prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
IMAGE=${IMAGE:-localhost/fwcluster}
BASE=localhost/debian:$SUITE

for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || {
    echo "build-image: $tool is missing: apt-get install podman runc debootstrap" >&2; exit 1; }
done
# crun refuses a host with hybrid cgroups; runc does not
PODMAN_OPTS=""
if command -v runc >/dev/null; then PODMAN_OPTS="--runtime runc"; fi
# podman sets the container's limits, which fails without CAP_SYS_RESOURCE
# ("error setting rlimit type 6") unless they stay below this session's:
# these were measured to work (../shared/ENVIRONMENT.md)
cap() { local h; h=$(ulimit -H "$1"); [ "$h" = unlimited ] || [ "$h" -ge "$2" ] && echo "$2" || echo "$h"; }
RUN_OPTS="--ulimit nofile=$(cap -n 1024):$(cap -n 4096) --ulimit nproc=$(cap -u 4096):$(cap -u 8192)"

if ! podman image exists "$BASE"; then
  root=$(mktemp -d /var/tmp/fwcluster-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "build-image: making the $SUITE base with debootstrap from $MIRROR"
  debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >/dev/null
  tar -C "$root" -c . | podman import - "$BASE" >/dev/null
fi
# the build's downloads trust what this host trusts (CA_BUNDLE; a host behind a
# TLS proxy has its CA there, the fresh Debian base does not); not kept in the image
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
CA_OPTS=""
if [ -f "$CA_BUNDLE" ]; then
  CA_OPTS="--volume $CA_BUNDLE:/run/host-ca.crt:ro --build-arg CA_BUNDLE=/run/host-ca.crt"
fi
echo "build-image: building $IMAGE on $BASE"
# shellcheck disable=SC2086
podman $PODMAN_OPTS build $RUN_OPTS $CA_OPTS --network host --build-arg BASE="$BASE" \
  -t "$IMAGE" .
echo "build-image: built $IMAGE; run it with:"
echo "  podman $PODMAN_OPTS run --rm --privileged --network host $RUN_OPTS $IMAGE make test"
