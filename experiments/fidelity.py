"""Was the emulator the bottleneck? Idle CPU over a run, drops at switches and nodes.

Mininet-HiFi's lesson: a result from an emulation counts only if the machine
kept up. Each point records the CPU left idle while its traffic ran (from
/proc/stat), the packets the switches dropped (OpenFlow port counters) and
what the nodes could not send or had to drop for lack of buffer; a point is
flagged when any of these says the emulator, not the system under test,
shaped the result.
"""
from __future__ import annotations

import os
import re
import subprocess

MIN_IDLE = 0.10  # below 10% idle CPU the emulation may have fallen behind
MAX_STEAL = 0.05  # above 5% of the CPU taken by the host (a virtual machine's steal time)
_PORT = re.compile(r"port\s+(\S+): rx pkts=\d+, bytes=\d+, drop=(\d+).*?"
                   r"tx pkts=\d+, bytes=\d+, drop=(\d+)", re.S)


def cpu_times(path: str = "/proc/stat") -> tuple[float, float, float]:
    """(idle, total, steal) jiffies of all CPUs since boot. Steal is the time a virtual
    machine's CPUs were runnable but the host ran something else: on this machine a
    SYN flood that left a third of the CPU idle in most runs left 5% in one, and the
    nodes then missed their heartbeats (issue 14), so a run says how much was taken."""
    with open(path, encoding="ascii") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]] + [0.0] * 8
    idle = fields[3] + fields[4]  # idle + iowait
    return idle, sum(fields[:8]), fields[7]


def idle_share(start: tuple, end: tuple) -> float | None:
    total = end[1] - start[1]
    return (end[0] - start[0]) / total if total > 0 else None


def steal_share(start: tuple, end: tuple) -> float | None:
    """The share of the CPU time between two readings that the host took."""
    total = end[1] - start[1]
    return (end[2] - start[2]) / total if total > 0 else None


def port_drops(text: str) -> int:
    """Drops (rx + tx) in ``ovs-ofctl dump-ports`` output, leaving out port LOCAL:
    the bridge's own interface is down by design, and floods to it are dropped."""
    return sum(int(m.group(2)) + int(m.group(3)) for m in _PORT.finditer(text)
               if m.group(1) != "LOCAL")


def bridge_drops(bridge: str, sysfs: str = "/sys/class/net") -> int:
    """Drops (rx + tx) on the ports of a kernel bridge, from their interface counters."""
    total = 0
    for port in os.listdir(os.path.join(sysfs, bridge, "brif")):
        for counter in ("rx_dropped", "tx_dropped"):
            with open(os.path.join(sysfs, port, "statistics", counter), encoding="ascii") as fh:
                total += int(fh.read())
    return total


def switch_drops(switches: list[str]) -> dict[str, int]:
    """Packets each switch dropped on its ports: OpenFlow port counters of an Open
    vSwitch bridge, interface counters of a kernel bridge's ports (the sync network)."""
    return {sw: bridge_drops(sw) if os.path.isdir(f"/sys/class/net/{sw}/brif") else
            port_drops(subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", sw],
                                      capture_output=True, text=True).stdout)
            for sw in switches}


def node_drops(stats: dict) -> int:
    """What a node's own I/O lost: failed sends, truncated reads and frames the kernel
    dropped before the node read them (not firewall drops)."""
    if not isinstance(stats, dict) or "error" in stats:
        return 0
    lost = sum(stats.get("tx_errors", {}).values()) + stats.get("rx_truncated", 0)
    lost += sum(stats.get("rx_dropped", {}).values())
    return lost + stats.get("sync", {}).get("counters", {}).get("send_errors", 0)


def judge(idle: float | None, switch: dict[str, int], nodes: dict[str, int],
          steal: float | None = None) -> list[str]:
    """Why this point's numbers may be the emulator's, not the cluster's; [] when none."""
    flags = []
    if idle is not None and idle < MIN_IDLE:
        flags.append(f"CPU {idle:.0%} idle (< {MIN_IDLE:.0%}) while the traffic ran")
    if steal is not None and steal > MAX_STEAL:
        flags.append(f"the host took {steal:.0%} of the CPU (steal > {MAX_STEAL:.0%}) "
                     "while the traffic ran")
    for sw, n in sorted(switch.items()):
        if n:
            flags.append(f"switch {sw} dropped {n} packets")
    for node, n in sorted(nodes.items()):
        if n:
            flags.append(f"node {node} lost {n} packets in its own I/O")
    return flags
