# The testbed in a container: what CI tests is what this runs (the same
# scripts/setup-machine.sh and make targets). Mininet needs network namespaces,
# veth pairs and Open vSwitch, so the container must be privileged.
#
# Where no image registry is reachable, scripts/build-image.sh makes the Debian (or Ubuntu)
# base with debootstrap and builds this with podman (README, "In a container").
# With a registry and docker:
#
#   docker build -t fwcluster .
#   docker run --rm --privileged -v "$PWD/results:/testbed/results" fwcluster            # make demo
#   docker run --rm --privileged fwcluster make test
#   docker run --rm -it --privileged fwcluster make cli                                   # labs
#
# Where the host has the openvswitch kernel module, add
# -v /lib/modules:/lib/modules:ro and the switches use the kernel datapath;
# without it they use Open vSwitch's userspace datapath (chosen at run time).
ARG BASE=debian:12
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
# CAs trusted during the build only (scripts/build-image.sh mounts the host's)
ARG CA_BUNDLE=""
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /testbed
# What the set-up needs first, so that an edit of the source does not reinstall
# everything: Debian packages and the locked Python packages in .venv
# (Open vSwitch starts at run time).
COPY scripts/setup-machine.sh scripts/
COPY pyproject.toml *.lock ./
RUN SETUP_CA_BUNDLE="$CA_BUNDLE" SETUP_NO_START=1 SETUP_NO_PROJECT=1 \
    bash scripts/setup-machine.sh \
    && rm -rf /var/lib/apt/lists/* /root/.cache
COPY . .
RUN SETUP_CA_BUNDLE="$CA_BUNDLE" SETUP_NO_START=1 bash scripts/setup-machine.sh \
    && rm -rf /root/.cache
CMD ["make", "demo"]
