#!/usr/bin/env bash
# Everything a fresh Debian 12 machine (root) needs for the testbed.
# Idempotent: each step checks first and says in one line what it does.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
APT_PACKAGES="mininet openvswitch-switch python3-openvswitch ethtool iproute2 iputils-ping
  iperf3 nftables python3-venv python3-pip procps psmisc tmux tcpdump tshark
  conntrack conntrackd"
# and the Debian packages that requirements.lock takes Python packages from
APT_PACKAGES="$APT_PACKAGES $(sed -n 's/.*# apt: \([a-z0-9.+-]*\).*/\1/p' requirements.lock)"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: Mininet and Open vSwitch need root: run as root (or with sudo)" >&2
  exit 1
fi

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
fi

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
if [ ! -f "$stamp" ] || [ requirements.lock -nt "$stamp" ] || [ build.lock -nt "$stamp" ] \
    || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the locked Python packages (requirements.lock, every file's hash checked) into $VENV"
  pip() { "$VENV/bin/pip" install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
  # Ryu 4.34 builds only without build isolation, with the setuptools of build.lock
  pip --require-hashes -r build.lock
  pip --require-hashes --no-build-isolation -r requirements.lock
  pip --no-build-isolation --no-deps -e .
  touch "$stamp"
fi
