"""Home-node forwarding benchmark: what a packet pays for crossing to its home.

A 3-node cluster in mode home. A probe client (experiments/probe.py rtt)
opens TCP connections one after another through the cluster and on each
measures round trips of 64-byte messages. Each configuration is a fresh
cluster:

- symmetric steering: both directions of a connection meet its home node,
  so every round trip goes directly through the home (the baseline);
- asymmetric steering: the inside switch hashes differently, so for most
  connections the replies arrive at another node, which asks for the home
  (one query per connection), then forwards every reply to it over the
  cluster network. A connection counts as forwarded when its node logged
  ``home_learned`` for it; the rest met their home by chance and are left out.

Then an iperf3 download (server to client, so the bulk direction is the
forwarded one) gives the cluster-network cost of MTU-sized frames.

Both run without and with a one-way inter-node latency (netem where the
kernel has it, else the nodes' delay line). Figures, per latency:

- home_rtt_direct / home_rtt_forwarded (p50, p99): per round trip;
- home_forward_added: forwarded p50 minus direct p50 (one forwarded packet
  per round trip, so this is the per-packet cost of forwarding);
- home_discovery (p50, p99): query sent to answer received;
- home_cluster_bytes_per_forwarded_byte: every byte the forwarding put on the
  cluster network (queries, answers, forwarded frames, UDP/IP/Ethernet
  headers) per byte of the frames forwarded, for the probe's small frames
  and for the download's large ones.
"""
from __future__ import annotations

import json
import os
import sys

from experiments.analysis.attribution import node_events, read_jsonl
from nodes import syncproto as sp
from nodes.samples import percentiles
from topo.addresses import server_ip
from topo.procs import wait_until

LATENCIES = (0.0, 0.010)  # one way, seconds: same room, and ~1000 km of fibre apart
CONNECTIONS, ROUNDS = 30, 40


def _home_counters(cluster) -> dict:
    total: dict = {}
    for node in cluster.node_names():
        for k, v in cluster.ask(node, "stats")["home"]["counters"].items():
            total[k] = total.get(k, 0) + v
    return total


def _cost(before: dict, after: dict) -> tuple[float | None, int]:
    """Cluster-network bytes on the wire per forwarded frame byte, between two snapshots."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    forwarded = delta.get("forwarded_bytes", 0)
    wire = delta.get("cluster_bytes_sent", 0) + sp.WIRE_HEADERS * delta.get("cluster_messages_sent", 0)
    return (wire / forwarded if forwarded else None), forwarded


def _run(out_dir: str, steering: str, latency: float, seconds: float) -> dict:
    from topo.net import Cluster
    tag = f"{steering}-{int(latency * 1000)}ms"
    run_dir = os.path.join(out_dir, f"home-{tag}")
    with Cluster(run_dir, "experiments/rules/ftp.rules", n=3, sync={"mode": "home"},
                 steering=steering, latency=latency,
                 run_id=f"fwc-bench-{os.getpid()}") as cluster:
        server = cluster.spawn("probe-server", [sys.executable, "-m", "experiments.probe",
                                                "server", "--address", server_ip(1)],
                               host=cluster.net["srv1"])
        wait_until(lambda: "ready" in server.log_tail(), 10, "the probe server")
        results = os.path.join(run_dir, "rtt.jsonl")
        before = _home_counters(cluster)
        client = cluster.spawn("probe-rtt", [sys.executable, "-m", "experiments.probe", "rtt",
                                             "--address", server_ip(1), "--out", results,
                                             "--connections", str(CONNECTIONS),
                                             "--rounds", str(ROUNDS)],
                               host=cluster.net["c1"])
        wait_until(lambda: not client.alive(), 60 + CONNECTIONS * ROUNDS * 4 * latency,
                   "the rtt probe to finish")
        after_probe = _home_counters(cluster)
        cluster.procs.pop("probe-server").stop()
        # The download's data direction is forwarded only when the two switches
        # steer its connection to different nodes (about 2 in 3); a new
        # connection (new port, new hash) is tried until it is.
        for attempt in range(6):
            start = _home_counters(cluster)
            bulk, received = _download(cluster, run_dir, seconds)
            after_bulk = _home_counters(cluster)
            split = _cost(start, after_bulk)[1] >= received / 2
            if steering == "symmetric" or split:
                break
        else:
            raise RuntimeError("6 downloads in a row met their home node: the steering is not split")
        via = cluster.latency_via
    with open(os.path.join(run_dir, "home_counters.json"), "w", encoding="utf-8") as fh:
        json.dump({"before": before, "after_probe": after_probe, "before_bulk": start,
                   "after_bulk": after_bulk, "downloads": attempt + 1}, fh, indent=2)
    connections = read_jsonl(results)
    learned = [e for e in node_events(run_dir) if e["event"] == "home_learned"]
    forwarded_ports = {port for e in learned for port in _ports(e["key"])}
    return {"connections": connections, "learned": learned, "forwarded_ports": forwarded_ports,
            "probe_cost": _cost(before, after_probe), "bulk_cost": _cost(start, after_bulk),
            "bulk_bps": bulk, "via": via}


def _download(cluster, run_dir: str, seconds: float) -> tuple[float, int]:
    """iperf3 from server to client (-R) on the probe's port: bits per second, bytes."""
    srv = cluster.spawn("iperf-server", ["iperf3", "-s", "-1", "-p", "5001", "-B", server_ip(1)],
                        host=cluster.net["srv1"])
    try:
        def attempt():
            out = cluster.net["c1"].cmd("iperf3", "-c", server_ip(1), "-p", "5001", "-R", "-J",
                                        "-t", str(seconds))
            try:
                data = json.loads(out)
            except ValueError:
                return None
            return data if "end" in data and not data.get("error") else None
        data = wait_until(attempt, 30 + seconds, "iperf3 through the cluster")
    finally:
        srv.stop()
    with open(os.path.join(run_dir, "iperf3.json"), "w", encoding="utf-8") as fh:  # the last
        json.dump(data, fh, indent=2)
    received = data["end"]["sum_received"]
    return received["bits_per_second"], received["bytes"]


def _ports(key: str) -> set[int]:
    fields = dict(part.split("=", 1) for part in key.split()[1:])
    return {int(fields["sport"]), int(fields["dport"])}


def home(seconds: float, out_dir: str) -> dict:
    figures: dict = {}
    for latency in LATENCIES:
        suffix = f"_lat{int(latency * 1000)}ms"
        direct = _run(out_dir, "symmetric", latency, seconds)
        split = _run(out_dir, "asymmetric", latency, seconds)
        direct_rtts = [r for c in direct["connections"] for r in c["rtt_ms"]]
        forwarded = [c for c in split["connections"] if c.get("port") in split["forwarded_ports"]]
        fwd_rtts = [r for c in forwarded for r in c["rtt_ms"]]
        failed = sum("error" in c for run in (direct, split) for c in run["connections"])
        d, f = percentiles([x / 1000 for x in direct_rtts]), percentiles([x / 1000 for x in fwd_rtts])
        disc = percentiles([e["discovery_ms"] / 1000 for e in split["learned"]])
        figures.update({
            f"home_rtt_direct_p50{suffix}": (d.get("p50"), "ms"),
            f"home_rtt_direct_p99{suffix}": (d.get("p99"), "ms"),
            f"home_rtt_forwarded_p50{suffix}": (f.get("p50"), "ms"),
            f"home_rtt_forwarded_p99{suffix}": (f.get("p99"), "ms"),
            f"home_forward_added_p50{suffix}": (
                f["p50"] - d["p50"] if f and d else None, "ms per forwarded packet"),
            f"home_discovery_p50{suffix}": (disc.get("p50"), "ms"),
            f"home_discovery_p99{suffix}": (disc.get("p99"), "ms"),
            f"home_forwarded_connections{suffix}": (len(forwarded), f"of {CONNECTIONS}"),
            f"home_probe_failures{suffix}": (failed, "connections"),
            f"home_cluster_bytes_per_forwarded_byte_small{suffix}": (
                split["probe_cost"][0], "bytes (64 B messages)"),
            f"home_cluster_bytes_per_forwarded_byte_bulk{suffix}": (
                split["bulk_cost"][0], "bytes (iperf3 frames)"),
            f"home_bulk_direct{suffix}": (direct["bulk_bps"] / 1e6, "Mbit/s"),
            f"home_bulk_forwarded{suffix}": (split["bulk_bps"] / 1e6, "Mbit/s"),
            f"home_direct_forwarded_bytes{suffix}": (
                direct["probe_cost"][1] + direct["bulk_cost"][1], "bytes (0 expected)"),
        })
        if latency:
            print(f"home: {latency * 1000:.0f} ms one way via {split['via']}", file=sys.stderr)
    return figures
