"""Counters in the Prometheus text exposition format, written by ``prometheus_client``.

``node_families`` turns the nodes' ``stats`` answers into metric families;
``controller_families`` the steering controller's state; ``exposition`` has
``prometheus_client`` write them (a collector asked at scrape time, the way
its custom collectors work), so that the types, escaping and ``_total``
suffixes are the client library's, and a scrape parses with Prometheus's own
parser. Counters are counters, what can go down is a gauge, and the lag
percentiles are gauges labelled ``percentile`` (``quantile`` belongs to
summaries). Every label value comes from a fixed set (node names, ports,
the engines' own counter and drop-reason names), never from a packet. Pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

CONTENT_TYPE = CONTENT_TYPE_LATEST
KINDS = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


@dataclass
class Family:
    """One metric: name, kind (counter or gauge), help, and (labels, value) samples;
    every sample of a family has the same label names."""

    name: str
    kind: str
    help: str
    samples: list = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not counter or gauge")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"{self.name}: a counter's name ends in _total")

    def add(self, value: float, **labels: str) -> "Family":
        if self.samples and sorted(labels) != sorted(self.samples[0][0]):
            raise ValueError(f"{self.name}: labels {sorted(labels)} differ from "
                             f"{sorted(self.samples[0][0])}")
        self.samples.append((labels, value))
        return self

    def metric(self):
        """The prometheus_client family of these samples."""
        names = sorted(self.samples[0][0]) if self.samples else []
        name = self.name[:-len("_total")] if self.kind == "counter" else self.name
        fam = KINDS[self.kind](name, self.help.replace("\n", " "), labels=names)
        for labels, value in self.samples:
            fam.add_metric([str(labels[n]) for n in names], float(value))
        return fam


class _Scrape:
    """A collector of one scrape's families (prometheus_client asks ``collect``)."""

    def __init__(self, families: list[Family]):
        self.families = families

    def collect(self):
        return [f.metric() for f in self.families if f.samples]


def exposition(families: list[Family]) -> str:
    """The text a Prometheus server scrapes; families without samples are left out."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(families))
    return generate_latest(registry).decode()


def node_families(stats: dict[str, dict | None]) -> list[Family]:
    """Families from every node's ``stats`` answer (None: the node did not answer)."""
    f = {name: Family(name, kind, text) for name, kind, text in (
        ("fwcluster_node_up", "gauge", "1 if the node's process answered this scrape"),
        ("fwcluster_connections", "gauge",
         "Connections in the node's table: role own (it carries them) or copy (as a backup node)"),
        ("fwcluster_expectations", "gauge", "Expected related connections (FTP data)"),
        ("fwcluster_held_connections", "gauge",
         "Connections whose packet is held until their state reached the backup nodes"),
        ("fwcluster_packets_in_total", "counter", "Frames read, by port"),
        ("fwcluster_bytes_in_total", "counter", "Bytes read, by port"),
        ("fwcluster_packets_out_total", "counter", "Frames forwarded, by egress port"),
        ("fwcluster_drops_total", "counter", "Frames dropped, by reason"),
        ("fwcluster_engine_total", "counter", "Gateway engine events, by counter"),
        ("fwcluster_sync_ready", "gauge", "1 once the node holds the state it must hold"),
        ("fwcluster_sync_mode", "gauge", "1 for the sync mode in force"),
        ("fwcluster_sync_alive_peers", "gauge", "Members this node hears (itself included)"),
        ("fwcluster_sync_unacked", "gauge", "Sync messages not yet acknowledged, by peer"),
        ("fwcluster_sync_lag_milliseconds", "gauge",
         "Replication lag, state change to acknowledgement: percentile 50 and 99 of the "
         "node's recent samples"),
        ("fwcluster_sync_bulk_last_milliseconds", "gauge",
         "The last bulk transfer this node received when it joined, start to end"),
        ("fwcluster_sync_total", "counter", "Sync protocol counters (messages, bytes, records)"),
        ("fwcluster_sync_rejected_total", "counter", "Sync messages rejected, by reason"),
        ("fwcluster_home_forward_table", "gauge", "Entries in the forward table (mode home)"),
        ("fwcluster_home_total", "counter", "Home-node forwarding counters (mode home)"),
    )}
    for node, s in sorted(stats.items()):
        f["fwcluster_node_up"].add(0 if s is None else 1, node=node)
        if s is None:
            continue
        sync = s.get("sync")
        own = sync["entries_owned"] if sync else s["entries"]
        f["fwcluster_connections"].add(own, node=node, role="own")
        f["fwcluster_connections"].add(s["entries"] - own, node=node, role="copy")
        f["fwcluster_expectations"].add(s["expectations"], node=node)
        f["fwcluster_held_connections"].add(s["held_connections"], node=node)
        for fam, key in (("fwcluster_packets_in_total", "packets_in"),
                         ("fwcluster_bytes_in_total", "bytes_in"),
                         ("fwcluster_packets_out_total", "packets_out")):
            for port, value in sorted(s.get(key, {}).items()):
                f[fam].add(value, node=node, port=port)
        for reason, value in sorted(s["drops"].items()):
            f["fwcluster_drops_total"].add(value, node=node, reason=reason)
        for name, value in sorted(s["counters"].items()):
            f["fwcluster_engine_total"].add(value, node=node, counter=name)
        if sync:
            f["fwcluster_sync_ready"].add(sync["ready"], node=node)
            f["fwcluster_sync_mode"].add(1, node=node, mode=sync["mode"])
            f["fwcluster_sync_alive_peers"].add(len(sync["alive"]), node=node)
            for peer, value in sorted(sync["unacked"].items()):
                f["fwcluster_sync_unacked"].add(value, node=node, peer=peer)
            for q, key in (("50", "lag_ms_p50"), ("99", "lag_ms_p99")):
                if sync.get(key) is not None:
                    f["fwcluster_sync_lag_milliseconds"].add(sync[key], node=node, percentile=q)
            if sync.get("bulk_ms_last") is not None:
                f["fwcluster_sync_bulk_last_milliseconds"].add(sync["bulk_ms_last"], node=node)
            for name, value in sorted(sync["counters"].items()):
                f["fwcluster_sync_total"].add(value, node=node, counter=name)
            for reason, value in sorted(sync["rejected"].items()):
                f["fwcluster_sync_rejected_total"].add(value, node=node, reason=reason)
        home = s.get("home")
        if home:
            f["fwcluster_home_forward_table"].add(home["forward_table"], node=node)
            for name, value in sorted(home["counters"].items()):
                f["fwcluster_home_total"].add(value, node=node, counter=name)
    return list(f.values())


def controller_families(nodes: list[str], live: list[str], table: list[str],
                        switches: int, counters: dict[str, int],
                        heartbeats: dict[str, int]) -> list[Family]:
    """Families of the steering controller: membership, buckets and what it sent."""
    up = Family("fwcluster_controller_node_live", "gauge",
                "1 if the controller steers flows to the node (it is a live member)")
    buckets = Family("fwcluster_controller_buckets", "gauge",
                     "Hash buckets of the switches' table that go to the node")
    beats = Family("fwcluster_controller_heartbeats_total", "counter",
                   "Heartbeats the controller heard from the node")
    for node in nodes:
        up.add(node in live, node=node)
        buckets.add(table.count(node), node=node)
        beats.add(heartbeats.get(node, 0), node=node)
    events = Family("fwcluster_controller_total", "counter",
                    "Controller events: node_down, node_up, buckets_moved, flow_mods, ...")
    for name, value in sorted(counters.items()):
        events.add(value, counter=name)
    return [up, buckets, beats, events,
            Family("fwcluster_controller_switches", "gauge",
                   "Switches connected to the controller").add(switches)]
