# The testbed in a container: what CI tests is what this runs (the same
# scripts/setup-machine.sh and make targets). Mininet needs network namespaces,
# veth pairs and Open vSwitch, so the container must be privileged:
#
#   docker build -t fwcluster .
#   docker run --rm --privileged -v "$PWD/results:/testbed/results" fwcluster            # make demo
#   docker run --rm --privileged fwcluster make test
#   docker run --rm -it --privileged fwcluster make cli                                   # labs
#
# Where the host has the openvswitch kernel module, add
# -v /lib/modules:/lib/modules:ro and the switches use the kernel datapath;
# without it they use Open vSwitch's userspace datapath (chosen at run time).
FROM debian:12

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /testbed
COPY . .
# Debian packages, the pinned Python packages in .venv; Open vSwitch starts at run time.
RUN SETUP_NO_START=1 bash scripts/setup-machine.sh && rm -rf /var/lib/apt/lists/* /root/.cache
CMD ["make", "demo"]
