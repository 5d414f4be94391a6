"""Names and addresses of the cluster's hosts: pure, for the runner, workload and analysis.

Clients are 10.0.0.1.. and fd00::1:1.., servers 10.0.0.201.. and fd00::2:1..
(one subnet of each family: the nodes are transparent), sync addresses 10.0.1.1..; node i is on port i of every
switch, hosts on ports 101...
"""
from __future__ import annotations

MAX_NODES = 8
HOST_PORT_BASE = 100
OFFLOADS = ("tx", "rx", "tso", "gso", "gro")


def client_ip(i: int) -> str:
    return f"10.0.0.{i}"


def server_ip(i: int) -> str:
    return f"10.0.0.{200 + i}"


PREFIX6 = 64  # the hosts' IPv6 subnet, fd00::/64


def client_ip6(i: int) -> str:
    return f"fd00::1:{i:x}"


def server_ip6(i: int) -> str:
    return f"fd00::2:{i:x}"


def server_address(i: int, family: str = "ipv4") -> str:
    """Server ``i``'s address of one family ("ipv4" or "ipv6")."""
    return server_ip6(i) if family == "ipv6" else server_ip(i)


def sync_ip(i: int) -> str:
    return f"10.0.1.{i}"


def client_mac(i: int) -> str:
    return f"02:00:00:00:01:{i:02x}"


def server_mac(i: int) -> str:
    return f"02:00:00:00:02:{i:02x}"


def controller_sync_ip() -> str:
    """The controller's ear on the sync network (an internal port of s3)."""
    return "10.0.1.254"


def offload_args(intf: str) -> list[str]:
    """The ethtool command that turns off checksum and segmentation offloads on ``intf``."""
    return ["ethtool", "-K", intf, *(w for o in OFFLOADS for w in (o, "off"))]
