"""Faults as named primitives on a running cluster (topo/net.py's ``Cluster``).

Each is the real event (SIGKILL, SIGSTOP, SIGTERM, a link down, nftables
loss, a tc rate limit, a controller restart) and writes itself with its time
to the run's event log. ``FAULTS`` is the one table of them: a spec's
``[[timeline]]`` (experiments/timeline.py), the interactive cluster
(experiments/console/) and the tests all go through it.

Importing this needs no Mininet: the functions act on the cluster they are given.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Callable

from topo.errors import SetupError

INTERFACES = ("eth0", "eth1", "eth2")  # outside, inside, sync


def crash(cluster, node: str) -> None:
    """SIGKILL the node's process (it leaves nothing behind but its state). A kernel
    node is a machine that dies: its agent and conntrackd are killed, its bridge stops
    forwarding and its kernel's conntrack table is gone."""
    proc = cluster.procs.pop(node)
    cluster.hung.discard(node)  # a stopped process dies of SIGKILL too
    cluster.log("fault_crash", node=node, pid=proc.pid)
    if getattr(cluster, "kind", "python") == "kernel":
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the agent and its conntrackd
        except ProcessLookupError:
            pass
        cluster.net[node].cmd("ip link set br0 down; conntrack -F >/dev/null 2>&1")
    proc.popen.kill()
    proc.stop()


def hang(cluster, node: str) -> None:
    """SIGSTOP the node's process (alive but silent)."""
    if getattr(cluster, "kind", "python") == "kernel":
        raise SetupError("hang: not on kernel nodes (the kernel forwards whatever its agent "
                         "does); use crash, leave, restart or a link fault")
    cluster.log("fault_hang", node=node)
    os.kill(cluster.procs[node].pid, signal.SIGSTOP)
    cluster.hung.add(node)


def resume(cluster, node: str) -> None:
    """Undo hang: SIGCONT."""
    cluster.log("fault_resume", node=node)
    os.kill(cluster.procs[node].pid, signal.SIGCONT)
    cluster.hung.discard(node)


def leave(cluster, node: str) -> None:
    """Graceful leave (SIGTERM: the node says goodbye and stops)."""
    cluster.log("fault_leave", node=node)
    cluster.procs.pop(node).stop()


def restart(cluster, node: str):
    """Start a node again (a new boot epoch: its peers see a restart); its Proc."""
    cluster.log("fault_restart", node=node)
    return cluster.start_node(node, restart=True)


def link(cluster, node: str, intf: str, up: bool) -> None:
    """Take one of a node's links down or up (eth0 outside, eth1 inside, eth2 sync)."""
    cluster.log("fault_link", node=node, intf=intf, up=up)
    cluster.net[node].cmd("ip link set", f"{node}-{intf}", "up" if up else "down")


def sync_loss(cluster, node: str, percent: float) -> None:
    """Drop ``percent`` % of what a node receives on its sync link (0 undoes it)."""
    cluster.log("fault_sync_loss", node=node, percent=percent)
    host, intf = cluster.net[node], f"{node}-eth2"
    host.cmd("nft delete table netdev fwloss 2>/dev/null")
    if not 0 <= percent <= 100:
        raise SetupError(f"sync loss {percent}%: give a percentage from 0 to 100")
    if percent > 0:
        # numgen's values are 0-99: "< 100" is out of its range, and nft refuses it
        match = "" if percent >= 100 else f"numgen random mod 100 '<' {int(percent)} "
        out = host.cmd(
            "nft add table netdev fwloss && nft add chain netdev fwloss c "
            f"'{{ type filter hook ingress device \"{intf}\" priority 0; policy accept; }}' && "
            f"nft add rule netdev fwloss c {match}counter drop")
        if "Error" in out:
            raise SetupError(f"nftables refused the loss rule on {intf}: {out.strip()}")


def rate_limit(cluster, node: str, intf: str, mbit: float) -> None:
    """Limit what a node sends on one link to ``mbit`` Mbit/s (0 lifts it)."""
    cluster.log("fault_rate_limit", node=node, intf=intf, mbit=mbit)
    dev = f"{node}-{intf}"
    cluster.net[node].cmd("tc qdisc del dev", dev, "root 2>/dev/null")
    if mbit > 0:
        out = cluster.net[node].cmd("tc qdisc add dev", dev,
                                    f"root tbf rate {mbit}mbit burst 64kb latency 50ms")
        if out.strip():
            raise SetupError(f"tc refused the rate limit on {dev}: {out.strip()}")


def controller_restart(cluster) -> None:
    """Kill the controller and start it again; the switches keep their flows."""
    proc = cluster.procs.pop("controller")
    proc.popen.kill()
    proc.stop()
    cluster.log("fault_controller_restart")
    cluster.start_controller()


@dataclass(frozen=True)
class Fault:
    """One fault: its parameters besides ``node``, how to apply it, and a line of help."""

    params: tuple
    apply: Callable
    help: str
    needs_node: bool = True


FAULTS = {
    "crash": Fault((), lambda c, e: crash(c, e["node"]), "SIGKILL the node's process"),
    "hang": Fault((), lambda c, e: hang(c, e["node"]), "SIGSTOP the node's process"),
    "resume": Fault((), lambda c, e: resume(c, e["node"]), "SIGCONT a hung node"),
    "leave": Fault((), lambda c, e: leave(c, e["node"]), "graceful leave (SIGTERM)"),
    "restart": Fault((), lambda c, e: restart(c, e["node"]), "start a stopped node again"),
    "link_down": Fault(("intf",), lambda c, e: link(c, e["node"], e["intf"], False),
                       "take a link down (intf eth0, eth1 or eth2)"),
    "link_up": Fault(("intf",), lambda c, e: link(c, e["node"], e["intf"], True),
                     "bring a link up again"),
    "sync_cut": Fault((), lambda c, e: link(c, e["node"], "eth2", False),
                      "cut the node's sync link"),
    "sync_restore": Fault((), lambda c, e: link(c, e["node"], "eth2", True),
                          "restore the node's sync link"),
    "sync_loss": Fault(("percent",), lambda c, e: sync_loss(c, e["node"], float(e["percent"])),
                       "drop percent % of what the node receives on its sync link"),
    "rate_limit": Fault(("intf", "mbit"),
                        lambda c, e: rate_limit(c, e["node"], e["intf"], float(e["mbit"])),
                        "limit what the node sends on intf to mbit Mbit/s (0 lifts it)"),
    "controller_restart": Fault((), lambda c, e: controller_restart(c),
                                "restart the steering controller", needs_node=False),
}


def apply(cluster, fault: str, **event):
    """Apply one fault by name (``node`` and its parameters as keywords)."""
    return FAULTS[fault].apply(cluster, event)
