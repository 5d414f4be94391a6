"""The firewall cluster topology, for the project and for ``mn --custom``.

::

    c1 ... cM                                   srv1 ... srvM
       \\   |                                      |   /
        [ s1 ] outside           inside [ s2 ]
        /  |  \\                          /  |  \\
      fw1 fw2 ... fwN  (bump in the wire, eth0 outside, eth1 inside)
        \\  |  /
        [ s3 ] sync network (eth2; the nodes, and the controller's ear)

Clients are 10.0.0.1.., servers 10.0.0.201.. (one subnet: the nodes are
transparent), sync addresses 10.0.1.1... Node i is on port i of s1, s2 and
s3; hosts are on ports 101... Offloads are off on every interface; s1 and s2
use Open vSwitch's kernel datapath where the openvswitch module exists and its
userspace datapath where it does not; s3 is a kernel bridge.

    mn --custom topo/cluster.py --topo fwcluster,3 --switch fwovs --controller remote

Mininet, the standard library and topo/addresses.py are imported here, so ``mn``
can load it (run it from the repository's root).
"""
from __future__ import annotations

import functools
import os
import subprocess

import sys

from mininet.node import Host, OVSSwitch, Switch
from mininet.topo import Topo

try:
    from topo.addresses import (HOST_PORT_BASE, MAX_NODES, PREFIX6, client_ip, client_ip6,
                                client_mac, offload_args, server_ip, server_ip6, server_mac,
                                sync_ip)
except ImportError:  # loaded by `mn --custom topo/cluster.py`, whose Python lacks the project
    sys.path.insert(0, os.getcwd())
    from topo.addresses import (HOST_PORT_BASE, MAX_NODES, PREFIX6, client_ip, client_ip6,
                                client_mac, offload_args, server_ip, server_ip6, server_mac,
                                sync_ip)

@functools.lru_cache(maxsize=1)
def kernel_datapath() -> bool:
    """True where the kernel has (or can load) the openvswitch module."""
    if os.path.exists("/sys/module/openvswitch"):
        return True
    try:
        return subprocess.run(["modprobe", "-q", "openvswitch"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def datapath() -> str:
    """The Open vSwitch datapath to use here: 'kernel' or 'user'."""
    return "kernel" if kernel_datapath() else "user"


def offloads_off(node, intf: str) -> None:
    """Turn off checksum and segmentation offloads on one interface of a node."""
    node.cmd(*offload_args(intf), ">/dev/null 2>&1")


class CleanHost(Host):
    """A host with offloads off and IPv6 off (no stray router solicitations), but for
    an ``ip6`` address on its interface: then IPv6 is on there, with that static address
    (no duplicate address detection, no router solicitations, no autoconfiguration)."""

    def config(self, ip6=None, **params):
        result = super().config(**params)
        self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
        for intf in self.intfNames():
            offloads_off(self, intf)
        if ip6:
            intf = self.defaultIntf()
            for key, value in (("accept_ra", 0), ("autoconf", 0), ("router_solicitations", 0),
                               ("dad_transmits", 0), ("disable_ipv6", 0)):
                self.cmd(f"sysctl -qw net.ipv6.conf.{intf}.{key}={value}")
            self.cmd("ip -6 addr add", ip6, "dev", intf, "nodad")
        return result


class FirewallHost(CleanHost):
    """A firewall node's host: no address on eth0 (outside) and eth1 (inside)."""

    def config(self, **params):
        result = super().config(**params)
        for intf in (f"{self.name}-eth0", f"{self.name}-eth1"):
            self.cmd("ip addr flush dev", intf)
            self.cmd("ip link set", intf, "up")
        return result


class _RunTimeDatapath:
    """Open vSwitch with the datapath this kernel allows and offloads off on its ports."""

    def __init__(self, name, **params):
        params.setdefault("datapath", datapath())
        super().__init__(name, **params)

    def start(self, controllers):
        super().start(controllers)
        for intf in self.intfNames():
            if intf != "lo":
                offloads_off(self, intf)


class ClusterSwitch(_RunTimeDatapath, OVSSwitch):
    """An outside or inside switch: OpenFlow 1.3, steered by the controller."""

    def __init__(self, name, **params):
        params.setdefault("protocols", "OpenFlow13")
        super().__init__(name, **params)


class SyncBridge(Switch):
    """The sync network: a kernel bridge (learning, no controller, multicast flooded).

    A real cluster's sync network is a link of its own. An Open vSwitch bridge here
    shares ovs-vswitchd with the data switches, and with the userspace datapath a
    data-plane flood delayed heartbeats past ``dead_after``: 685 false failovers in a
    15 s SYN flood (robustness suite). The kernel forwards on the sender's CPU."""

    def connected(self) -> bool:
        return True

    def start(self, _controllers) -> None:
        self.cmd("ip link del", self, "type bridge >/dev/null 2>&1")
        # no STP, no snooping (OVS's bridge flooded multicast too), and no netfilter:
        # the root namespace's firewall has no say on the cluster's sync network
        self.cmd("ip link add", self, "type bridge stp_state 0 forward_delay 0"
                 " mcast_snooping 0 nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0")
        for intf in self.intfList():
            if self.name in intf.name:
                self.cmd("ip link set", intf, "master", self, "up")
                offloads_off(self, intf.name)
        self.cmd("ip link set", self, "up")
        offloads_off(self, self.name)

    def stop(self, deleteIntfs: bool = True) -> None:
        self.cmd("ip link del", self, "type bridge >/dev/null 2>&1")
        super().stop(deleteIntfs)


class FirewallClusterTopo(Topo):
    """N firewall nodes between an outside and an inside switch, plus a sync net."""

    def build(self, n: int = 3, clients: int = 2, servers: int = 2):
        if not 1 <= n <= MAX_NODES:
            raise ValueError(f"cluster size {n} is not 1..{MAX_NODES}")
        if not 1 <= clients <= 50 or not 1 <= servers <= 50:
            raise ValueError("clients and servers must each be 1..50")
        outside = self.addSwitch("s1", cls=ClusterSwitch, dpid="1")
        inside = self.addSwitch("s2", cls=ClusterSwitch, dpid="2")
        sync = self.addSwitch("s3", cls=SyncBridge, dpid="3")
        for i in range(1, n + 1):
            fw = self.addHost(f"fw{i}", cls=FirewallHost, ip=None)
            self.addLink(fw, outside, port1=0, port2=i)
            self.addLink(fw, inside, port1=1, port2=i)
            self.addLink(fw, sync, port1=2, port2=i, params1={"ip": f"{sync_ip(i)}/24"})
        for i in range(1, clients + 1):
            c = self.addHost(f"c{i}", cls=CleanHost, ip=f"{client_ip(i)}/24", mac=client_mac(i),
                             ip6=f"{client_ip6(i)}/{PREFIX6}")
            self.addLink(c, outside, port2=HOST_PORT_BASE + i)
        for i in range(1, servers + 1):
            s = self.addHost(f"srv{i}", cls=CleanHost, ip=f"{server_ip(i)}/24", mac=server_mac(i),
                             ip6=f"{server_ip6(i)}/{PREFIX6}")
            self.addLink(s, inside, port2=HOST_PORT_BASE + i)


# What `mn --custom` merges into its registries (it reads these lowercase names).
topos = {"fwcluster": FirewallClusterTopo}
switches = {"fwovs": ClusterSwitch}
TOPOS = topos
