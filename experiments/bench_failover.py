"""Failover benchmark: from a node crash to the first packet through its backup.

A TCP probe connection (experiments/probe.py: 16 bytes every 5 ms, echoed)
crosses a 3-node cluster (on-demand sync, policy backup). Again and again the
node carrying it is crashed (SIGKILL, time in the run's event log); its backup
adopts the connection and the controller moves the dead node's buckets to it;
the backup logs the connection's first packet; the crashed node is restarted
and gets its share back before the next crash. Figures, over every crash:

- failover_first_packet: fault -> first packet of the connection through the backup;
- failover_detection: fault -> the controller's node_down;
- failover_after_detection: node_down -> that first packet.

A bulk download behaves differently: its sender waits for acknowledgements
that died with the node, so its first packet through the backup comes with
TCP's retransmission timeout (at least 200 ms on Linux), whatever the cluster
does; the probe keeps sending and so shows the cluster's own part.
"""
from __future__ import annotations

import glob
import os
import sys
import time

from experiments.analysis.attribution import read_jsonl
from nodes.samples import percentiles
from topo.addresses import server_ip
from topo.procs import wait_until
from topo import faults

CRASHES = 20


def _events(run_dir: str, pattern: str) -> list[dict]:
    return [e for p in glob.glob(os.path.join(run_dir, pattern)) for e in read_jsonl(p)]


def failover(seconds: float, out_dir: str, heartbeat: float = 0.02,
             dead_after: float = 0.1) -> dict:
    from topo.net import Cluster
    run_dir = os.path.join(out_dir, f"failover-{int(dead_after * 1000)}ms")
    sync = {"mode": "ondemand", "heartbeat": heartbeat, "dead_after": dead_after}
    with Cluster(run_dir, "experiments/rules/ftp.rules", n=3, sync=sync,
                 failover="backup", run_id=f"fwc-bench-{os.getpid()}") as cluster:
        server = cluster.spawn("probe-server", [sys.executable, "-m", "experiments.probe",
                                                "server", "--address", server_ip(1)],
                               host=cluster.net["srv1"])
        wait_until(lambda: "ready" in server.log_tail(), 10, "the probe server")
        client = cluster.spawn("probe-client", [sys.executable, "-m", "experiments.probe",
                                                "client", "--address", server_ip(1)],
                               host=cluster.net["c1"])
        wait_until(lambda: "connected" in client.log_tail(), 10, "the probe to connect")
        samples = []
        for i in range(CRASHES):
            node = wait_until(lambda: _carrier(cluster), 10, "the carrying node")
            t_fault = time.time()
            faults.crash(cluster, node)
            first = wait_until(lambda: [e for e in _events(run_dir, "fw*.events.jsonl")
                                        if e["event"] == "failover_first_packet"
                                        and e["t"] > t_fault], 10,
                               "the first packet through the backup")
            down = [e for e in _events(run_dir, "controller.events.jsonl")
                    if e["event"] == "node_down" and e["t"] > t_fault]
            samples.append((min(e["t"] for e in first) - t_fault,
                            down[0]["decided"] - t_fault if down else None))
            print(f"failover: crash {i + 1}/{CRASHES} of {node}: first packet after "
                  f"{samples[-1][0] * 1000:.1f} ms", file=sys.stderr, flush=True)
            faults.restart(cluster, node)
            cluster.wait_ready()
            wait_until(lambda: _carrier(cluster) == node, 15, f"{node} to carry it again")
        if not client.alive():
            raise RuntimeError("the probe connection died: " + client.log_tail())
    total = [s[0] for s in samples]
    detect = [s[1] for s in samples if s[1] is not None]
    after = [s[0] - s[1] for s in samples if s[1] is not None]
    out = {}
    for name, values in (("failover_first_packet", total), ("failover_detection", detect),
                         ("failover_after_detection", after)):
        p = percentiles(values)
        out[f"{name}_p50"] = (p.get("p50"), "ms")
        out[f"{name}_p99"] = (p.get("p99"), "ms")
    out["failover_crashes"] = (len(samples), "crashes")
    out["failover_order_violations"] = (order_violations(samples), "crashes")
    return out


def order_violations(samples) -> int:
    """Faults whose first packet through the backup came before the decision that sent
    it there (1 ms for the logs): the figures of one fault must describe one event.
    ``samples``: (first packet, decision, ...) after the fault, in seconds."""
    return sum(1 for first, decided, *_ in samples
               if decided is not None and first < decided - 0.001)


def _carrier(cluster) -> str | None:
    for node in cluster.node_names():
        if node in cluster.procs:
            try:
                entries = cluster.ask(node, "dump")["entries"]
            except (OSError, ValueError):
                continue
            for e in entries:
                if "dport=5001" in e["orig"] and e["state"] == "ESTABLISHED" and e["owner"] == node:
                    return node
    return None


# -- Python nodes and kernel nodes, side by side -----------------------------------
SIDE_CRASHES = 10
UDP_PORT = 5002
STREAM_INTERVAL = 0.001  # the probe server's datagram period
# The client logs every silence longer than this: three periods, so a fast failover
# (a link down is seen within one heartbeat) is still an outage and a scheduling
# hiccup of a period or two is not. An outage shorter than this is not measured.
STREAM_RESOLUTION = 0.003
# The silence that a fault causes begins at most this long after it (datagrams
# already past the node's outside link still arrive); a later one is another's.
OUTAGE_START_SLACK = 0.05
RETURN_FLOOR_MS = 10.0  # the return figure counts outages of 10 ms or more


def outage_of(gaps: list[dict], t_fault: float) -> dict | None:
    """The stream's outage caused by a fault at ``t_fault`` (wall clock): the longest
    silence that ends after the fault and began before it or just after it
    (``OUTAGE_START_SLACK``): a fault's command can cause a hiccup of a few ms before
    the fault itself takes hold. None if there is none."""
    near = [g for g in gaps if g["first"] > t_fault and g["last"] <= t_fault + OUTAGE_START_SLACK]
    return max(near, key=lambda g: g["first"] - g["last"]) if near else None


def stream_outage(gaps_path: str, t_fault: float, moved, timeout: float = 10.0) -> dict:
    """Wait for the outage a fault caused: once the stream has moved to another node
    (``moved()``), every silence near the fault has been logged (a silence is logged
    when the stream resumes). If none longer than STREAM_RESOLUTION began near the
    fault, the outage was shorter than that: it is reported as that bound, marked
    ``"below_resolution"``."""
    def found():
        if time.time() <= t_fault + OUTAGE_START_SLACK + 0.2 or not moved():
            return None
        gap = outage_of(read_jsonl(gaps_path), t_fault)
        return gap or {"last": t_fault, "first": t_fault + STREAM_RESOLUTION,
                       "gap_ms": STREAM_RESOLUTION * 1000, "below_resolution": True}
    return wait_until(found, timeout, "the stream through the backup")


def rx_packets(cluster, node: str) -> int:
    out = cluster.net[node].cmd(f"cat /sys/class/net/{node}-eth1/statistics/rx_packets")
    return int(out.strip() or 0)


def udp_carrier(cluster, window: float = 0.2) -> str | None:
    """The node the switches send the probe's stream to (it enters at the inside
    port, a datagram a ms, whether the node lets it through or not)."""
    live = [n for n in cluster.node_names() if n in cluster.procs and cluster.procs[n].alive()]
    before = {n: rx_packets(cluster, n) for n in live}
    time.sleep(window)
    grown = {n: rx_packets(cluster, n) - before[n] for n in live}
    node = max(grown, key=grown.get) if grown else None
    return node if node and grown[node] > 0.5 * window / 0.001 else None


# A fault, and what undoes it: the real event each time (SIGKILL; SIGSTOP; the node's
# outside link down, which it sees and reports), the clock the first datagram through
# the new node.
FAULTS = {"crash": (faults.crash, faults.restart),
          "hang": (faults.hang, faults.resume),
          "linkdown": (lambda c, n: faults.link(c, n, "eth0", False),
                       lambda c, n: faults.link(c, n, "eth0", True))}


def crash_to_stream(kind: str, out_dir: str, crashes: int = SIDE_CRASHES,
                    fault: str = "crash", death_notice: bool = True) -> dict:
    """Two nodes of one kind, on-demand sync (conntrackd FT-FW for kernel nodes, with
    the commit before steering), the UDP probe's stream from server to client (replies:
    state needed). Crash the carrier (or hang it, or take its outside link down:
    ``fault``), time the first datagram through the backup, the controller's decision
    (detection) and, on kernel nodes, the commit it waited for; undo the fault
    (restart, resume, link up), and time the outage while its buckets come back (a
    restarted node's state must be back first: a rejoining node's resync).
    ``death_notice`` off: Python nodes' peers learn of a crash from heartbeats
    only (figures named ``..._heartbeats_only``)."""
    from topo.net import Cluster
    inflict, undo = FAULTS[fault]
    suffix = ("_kernelnode" if kind == "kernel" else "") + \
        ("" if death_notice else "_heartbeats_only")
    run_dir = os.path.join(out_dir, f"failover-side-{kind}-{fault}{suffix.replace('_', '-')}")
    sync = {"mode": "ondemand"} if death_notice else {"mode": "ondemand", "death_notice": False}
    with Cluster(run_dir, "experiments/rules/ftp.rules", n=2, sync=sync,
                 failover="backup", node=kind, run_id=f"fwk-bench-{os.getpid()}") as cluster:
        gaps = os.path.join(run_dir, "udp-gaps.jsonl")
        server = cluster.spawn("probe-server", [sys.executable, "-m", "experiments.probe",
                                                "udp-server", "--address", server_ip(1),
                                                "--port", str(UDP_PORT),
                                                "--interval", str(STREAM_INTERVAL)],
                               host=cluster.net["srv1"])
        wait_until(lambda: "ready" in server.log_tail(), 10, "the probe server")
        client = cluster.spawn("probe-client", [sys.executable, "-m", "experiments.probe",
                                                "udp-client", "--address", server_ip(1),
                                                "--port", str(UDP_PORT), "--out", gaps,
                                                "--gap", str(STREAM_RESOLUTION)],
                               host=cluster.net["c1"])
        wait_until(lambda: "streaming" in client.log_tail(), 10, "the probe's stream")
        samples, returns, short = [], [], 0
        for i in range(crashes):
            node = wait_until(lambda: udp_carrier(cluster), 10, "the carrying node")
            t_fault = time.time()
            inflict(cluster, node)
            gap = stream_outage(gaps, t_fault,
                                lambda: udp_carrier(cluster) not in (None, node))
            short += bool(gap.get("below_resolution"))
            down = [e for e in _events(run_dir, "controller.events.jsonl")
                    if e["event"] == "node_down" and e["t"] > t_fault]
            # node_down is logged after the push and the commit (kernel nodes,
            # before_steer); "decided" is when the controller took the node for down
            commit = sum(v or 0 for v in down[0].get("commit_ms", {}).values()) / 1000 \
                if down else 0.0
            samples.append((gap["first"] - t_fault,
                            down[0]["decided"] - t_fault if down else None,
                            commit if down and down[0].get("commit_ms") else None))
            print(f"failover ({kind} nodes): {fault} {i + 1}/{crashes} of {node}: stream back "
                  f"after {'under ' if gap.get('below_resolution') else ''}"
                  f"{samples[-1][0] * 1000:.1f} ms", file=sys.stderr, flush=True)
            t_restart = time.time()
            undo(cluster, node)
            cluster.wait_ready()
            wait_until(lambda: udp_carrier(cluster) == node, 15, f"{node} to carry it again")
            time.sleep(0.1)  # an outage at the return is logged when the stream resumes
            returns.append(max([g["gap_ms"] for g in read_jsonl(gaps) if g["first"] > t_restart
                                and g["gap_ms"] >= RETURN_FLOOR_MS] or [0.0]))
        if not client.alive():
            raise RuntimeError("the probe died: " + client.log_tail())
    out = {}
    for name, values in ((f"failover_{fault}", [s[0] for s in samples]),
                         (f"failover_{fault}_detection",
                          [s[1] for s in samples if s[1] is not None]),
                         (f"failover_{fault}_commit",
                          [s[2] for s in samples if s[2] is not None])):
        if not values:
            continue  # Python nodes commit nothing
        p = percentiles(values)
        out[f"{name}_p50{suffix}"] = (p.get("p50"), "ms")
        out[f"{name}_p99{suffix}"] = (p.get("p99"), "ms")
        out[f"{name}_max{suffix}"] = (max(values) * 1000, "ms")
    out[f"failover_{fault}_order_violations{suffix}"] = (order_violations(samples), "faults")
    returned = "return" if fault == "crash" else f"{fault}_return"
    out[f"failover_{returned}_gap_max{suffix}"] = (max(returns), "ms")
    out[f"failover_{fault}_crashes{suffix}"] = (len(samples), "faults")
    # outages under the probe's resolution, counted at that bound in the figures above
    out[f"failover_{fault}_below_resolution{suffix}"] = (short, "faults")
    return out
