#!/usr/bin/env bash
# Build the testbed's container image with podman (no daemon), from a Debian or
# Ubuntu base that debootstrap makes from the distribution's archive: no image
# registry needed.
#   scripts/build-image.sh                                   -> localhost/fwcluster (Debian 12)
#   SUITE=trixie IMAGE=localhost/fwcluster:trixie scripts/build-image.sh   (Debian 13)
#   SUITE=noble IMAGE=localhost/fwcluster:noble scripts/build-image.sh     (Ubuntu 24.04)
# SUITE (bookworm), MIRROR (the distribution's archive), IMAGE (localhost/fwcluster).
# Then, as root:
#   podman $PODMAN_OPTS run --rm --privileged --network none $RUN_OPTS localhost/fwcluster make test
# with PODMAN_OPTS and RUN_OPTS as this script prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${SUITE:-bookworm}
case "$SUITE" in
  noble) DISTRO=ubuntu ;;  # Ubuntu 24.04; an older Ubuntu's Python is below 3.11
  bookworm|trixie|forky|sid) DISTRO=debian ;;
  *) echo "build-image: SUITE=$SUITE is not one this script knows: bookworm, trixie (Debian) or noble (Ubuntu 24.04)" >&2
     exit 1 ;;
esac
if [ "$DISTRO" = ubuntu ]; then
  MIRROR=${MIRROR:-http://archive.ubuntu.com/ubuntu}
else
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
IMAGE=${IMAGE:-localhost/fwcluster}
BASE=localhost/$DISTRO:$SUITE
# Ubuntu's archive key, for a Debian host's debootstrap: the ubuntu-keyring package,
# fetched over HTTPS and checked against this hash (its 2018 archive key has the
# fingerprint F6EC B376 2474 EDA9 D21B 7022 8719 20D1 991B C93C)
UBUNTU_KEYRING_DEB=https://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb
UBUNTU_KEYRING_SHA256=36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8

tools="podman debootstrap"
[ "$DISTRO" = ubuntu ] && tools="$tools curl dpkg-deb"  # the Ubuntu archive key's package
for tool in $tools; do
  command -v "$tool" >/dev/null || {
    echo "build-image: $tool is missing: apt-get install podman runc debootstrap curl" >&2; exit 1; }
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
  if [ "$DISTRO" = ubuntu ]; then
    keys=$root.keys
    mkdir -p "$keys"
    trap 'rm -rf "$root" "$keys"' EXIT
    curl -fsS -o "$keys/keyring.deb" "$UBUNTU_KEYRING_DEB"
    echo "$UBUNTU_KEYRING_SHA256  $keys/keyring.deb" | sha256sum -c --quiet - || {
      echo "build-image: $UBUNTU_KEYRING_DEB is not the file this script knows (sha256)" >&2; exit 1; }
    dpkg-deb -x "$keys/keyring.deb" "$keys"
    # Debian's debootstrap may not know the suite by name: every Ubuntu suite's
    # script is Ubuntu's "gutsy" one
    script=/usr/share/debootstrap/scripts/$SUITE
    [ -e "$script" ] || script=/usr/share/debootstrap/scripts/gutsy
    debootstrap --variant=minbase --components=main,universe \
      --keyring="$keys/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
      "$SUITE" "$root" "$MIRROR" "$script" >/dev/null
    printf 'deb %s %s main universe\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE-updates" \
      http://security.ubuntu.com/ubuntu "$SUITE-security" > "$root/etc/apt/sources.list"
  else
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >/dev/null
  fi
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
echo "  podman $PODMAN_OPTS run --rm --privileged --network none $RUN_OPTS $IMAGE make test"
