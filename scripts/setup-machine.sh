#!/usr/bin/env bash
# Everything a fresh Debian 12 or 13 or Ubuntu 24.04 machine (root) needs for the testbed.
# Idempotent: each step checks first and says in one line what it does.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
APT_PACKAGES="mininet openvswitch-switch python3-openvswitch ethtool iproute2 iputils-ping
  iperf3 nftables python3-venv python3-pip procps psmisc tmux tcpdump tshark
  conntrack conntrackd ca-certificates"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: Mininet and Open vSwitch need root: run as root (or with sudo)" >&2
  exit 1
fi

apt_install() {  # the packages named that are not installed yet
  local missing="" p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $missing >/dev/null
  fi
}
# shellcheck disable=SC2086
apt_install $APT_PACKAGES

# SETUP_CA_BUNDLE=FILE: trust FILE's CAs for this set-up's downloads only (an image
# built on a host behind a TLS proxy: scripts/build-image.sh passes the host's)
if [ -n "${SETUP_CA_BUNDLE:-}" ]; then
  extra_ca=/usr/local/share/ca-certificates/fwcluster-setup.crt
  cp "$SETUP_CA_BUNDLE" "$extra_ca" && update-ca-certificates >/dev/null 2>&1
  trap 'rm -f "$extra_ca"; update-ca-certificates --fresh >/dev/null 2>&1' EXIT
fi

# The lock files of this system's Python (scripts/lock.py writes them): Debian 12's
# 3.11 (Ryu) has the plain names, a newer one (os-ken instead of Ryu) its own.
PYVER=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$PYVER" = 3.11 ]; then BUILD_LOCK=build.lock; LOCK=requirements.lock
else BUILD_LOCK=build-py$PYVER.lock; LOCK=requirements-py$PYVER.lock; fi
if [ ! -f "$LOCK" ]; then
  echo "setup: no lock file for Python $PYVER ($LOCK): run /usr/bin/python3 scripts/lock.py on this system" >&2
  exit 1
fi
# and the Debian packages that the lock takes Python packages from
# shellcheck disable=SC2046
apt_install $(sed -n 's/.*# apt: \([a-z0-9.+-]*\).*/\1/p' "$LOCK")

# SETUP_NO_START=1: install only (a container image build cannot start daemons;
# the first make target run in the privileged container starts Open vSwitch).
if [ "${SETUP_NO_START:-0}" != 1 ] && ! ovs-vsctl --timeout=2 show >/dev/null 2>&1; then
  echo "setup: starting Open vSwitch (userspace datapath where the kernel has no openvswitch module)"
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
  ovs-vsctl --timeout=5 show >/dev/null || {
    echo "setup: Open vSwitch did not start; run /usr/share/openvswitch/scripts/ovs-ctl start" >&2; exit 1; }
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV (Debian's python3, which sees Mininet's package)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ "$LOCK" -nt "$stamp" ] || [ "$BUILD_LOCK" -nt "$stamp" ] \
    || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the locked Python packages ($LOCK, every file's hash checked) into $VENV"
  pip() { "$VENV/bin/pip" install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
  # Ryu 4.34 builds only without build isolation, with the setuptools of build.lock
  pip --require-hashes -r "$BUILD_LOCK"
  pip --require-hashes --no-build-isolation -r "$LOCK"
  # SETUP_NO_PROJECT=1: the locked packages only (an image's layer that needs no source)
  if [ "${SETUP_NO_PROJECT:-0}" != 1 ]; then
    pip --no-build-isolation --no-deps -e .
    touch "$stamp"
  fi
fi
