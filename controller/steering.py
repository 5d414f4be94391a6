"""The clustering mechanism as data: which flows spread connections over nodes.

A symmetric hash of each IPv4 or IPv6 packet's addresses and ports picks one of
``buckets`` buckets (Open vSwitch's ``multipath`` action with
``symmetric_l3l4+udp``: addresses, protocol, TCP and UDP ports), and a bucket
table maps each bucket to a live node. Both switches compute the same hash, so
both directions of a connection cross the same node. Fragments, first and
later (IPv4; IPv6 ones after the first), and ICMPv6 are hashed by their addresses only
(``symmetric_l3``), so a datagram's fragments meet one node and can be
reassembled there (Open vSwitch gives a later IPv6 fragment protocol 44, and
under the port hash a large ping6 had its fragments on two nodes). The price:
a flow's fragmented datagrams may cross another node than its whole ones;
steering "addresses" (``by_addresses``) hashes every packet by its addresses,
as Linux's xt_cluster match does, and no flow splits. Non-IP frames (ARP)
cross one designated node. Frames leaving a node are delivered to hosts by destination
MAC. Pure: no ryu import.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from nodes.groups import adopter

COOKIE = 0xF1C1  # marks every flow this policy installs
TABLE_CLASSIFY, TABLE_BUCKETS, TABLE_DELIVER = 0, 1, 2
ETH_TYPE_IP, ETH_TYPE_IPV6 = 0x0800, 0x86DD
PROTO_FRAGMENT6, PROTO_ICMPV6 = 44, 58  # later IPv6 fragments (as Open vSwitch sees them)
FRAGMENT = (1, 1)  # (value, mask) of Open vSwitch's ip_frag (nw_frag) for any fragment
L3L4, L3 = "symmetric_l3l4+udp", "symmetric_l3"  # multipath's hash fields
BROADCAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")  # (value, mask) of group MACs


@dataclass(frozen=True)
class FlowSpec:
    """One flow as data: table, priority, match fields and actions."""

    table: int
    priority: int
    match: dict
    actions: tuple  # ("output", port) | ("multipath", buckets, "reg0", basis, fields)
    goto: int | None = None


@dataclass
class SwitchSpec:
    """One switch: its side of the cluster, its node ports and its hosts."""

    name: str
    role: str  # "outside" or "inside"
    node_ports: dict  # node name -> port number
    host_ports: dict  # host MAC -> port number


@dataclass
class ClusterSpec:
    """What the controller is told about the network it steers."""

    nodes: list
    switches: dict = field(default_factory=dict)  # dpid -> SwitchSpec
    buckets: int = 64
    asymmetric: bool = False  # the inside switch hashes differently: directions split
    by_addresses: bool = False  # every packet hashed by its addresses only (xt_cluster's way)

    def to_json(self) -> str:
        return json.dumps({"nodes": self.nodes, "buckets": self.buckets,
                           "asymmetric": self.asymmetric, "by_addresses": self.by_addresses,
                           "switches": {str(d): vars(s) for d, s in self.switches.items()}},
                          indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ClusterSpec":
        raw = json.loads(text)
        switches = {int(d): SwitchSpec(s["name"], s["role"], s["node_ports"],
                                       {m: int(p) for m, p in s["host_ports"].items()})
                    for d, s in raw["switches"].items()}
        spec = cls(list(raw["nodes"]), switches, int(raw.get("buckets", 64)),
                   bool(raw.get("asymmetric", False)), bool(raw.get("by_addresses", False)))
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise ValueError, in one line, where the spec cannot be steered."""
        if not self.nodes:
            raise ValueError("cluster spec names no nodes")
        if not 1 <= self.buckets <= 4096:
            raise ValueError(f"buckets={self.buckets} must be 1..4096")
        for dpid, sw in self.switches.items():
            missing = set(self.nodes) - set(sw.node_ports)
            if missing:
                raise ValueError(f"switch {sw.name} (dpid {dpid}) has no port for {sorted(missing)}")


def assign_buckets(live: list, buckets: int) -> list:
    """Bucket table: bucket b goes to live node b mod len(live)."""
    if not live:
        raise ValueError("no live node to steer to")
    return [live[b % len(live)] for b in range(buckets)]


def switch_flows(sw: SwitchSpec, bucket_table: list, designated: str,
                 basis: int = 0, fields: str = L3L4) -> list[FlowSpec]:
    """Every flow of one switch, given the bucket table and the non-IP node.

    Both switches hash with ``basis`` 0, so both directions of a connection
    meet the same node; another basis on one switch splits them (asymmetric).
    ``fields`` L3 hashes every packet by its addresses only, so a flow's
    fragmented datagrams meet its whole ones (and all flows between two hosts
    one node).
    """
    flows = []
    host_ports = sorted(set(sw.host_ports.values()))
    for port in sorted(sw.node_ports.values()):  # from a node: deliver to hosts
        flows.append(FlowSpec(TABLE_CLASSIFY, 200, {"in_port": port}, (), TABLE_DELIVER))
    for port in host_ports:
        for eth_type in (ETH_TYPE_IP, ETH_TYPE_IPV6):  # the hash reads either family's fields
            flows.append(FlowSpec(TABLE_CLASSIFY, 100, {"in_port": port, "eth_type": eth_type},
                                  (("multipath", len(bucket_table), "reg0", basis, fields),),
                                  TABLE_BUCKETS))
        # by addresses only, so that a datagram's fragments meet one node: any IPv4
        # fragment (Open vSwitch's nw_frag) and a later IPv6 one (protocol 44 to Open
        # vSwitch; matching IPv6 by nw_frag lost every ping -6 -s 3000 here); and ICMPv6
        # (its errors and neighbour discovery carry no ports)
        for match in ({"eth_type": ETH_TYPE_IP, "ip_frag": FRAGMENT},
                      {"eth_type": ETH_TYPE_IPV6, "ip_proto": PROTO_FRAGMENT6},
                      {"eth_type": ETH_TYPE_IPV6, "ip_proto": PROTO_ICMPV6}):
            flows.append(FlowSpec(TABLE_CLASSIFY, 110, {"in_port": port, **match},
                                  (("multipath", len(bucket_table), "reg0", basis, L3),),
                                  TABLE_BUCKETS))
        flows.append(FlowSpec(TABLE_CLASSIFY, 50, {"in_port": port},
                              (("output", sw.node_ports[designated]),), TABLE_DELIVER))
    for bucket, node in enumerate(bucket_table):
        flows.append(FlowSpec(TABLE_BUCKETS, 100, {"reg0": bucket},
                              (("output", sw.node_ports[node]),)))
    for mac, port in sorted(sw.host_ports.items()):
        flows.append(FlowSpec(TABLE_DELIVER, 100, {"eth_dst": mac}, (("output", port),)))
    flows.append(FlowSpec(TABLE_DELIVER, 50, {"eth_dst": BROADCAST},
                          tuple(("output", p) for p in host_ports)))
    return flows


POLICIES = ("backup", "spread")


class Steering:
    """The bucket table, following membership: only a failed node's buckets move.

    Policy ``backup`` (the seed's modified clustering mechanism) gives a failed
    node's buckets to its first live backup, the node that adopts its
    connections (nodes.groups.adopter); ``spread`` deals them out over every
    survivor, as an unmodified mechanism would. A node that is back gets its
    own buckets again once it reports that it holds its state (``ready``).
    """

    def __init__(self, spec: ClusterSpec, policy: str = "backup", k: int = 1):
        if policy not in POLICIES:
            raise ValueError(f"failover policy {policy!r} unknown (use {', '.join(POLICIES)})")
        self.spec, self.policy, self.k = spec, policy, k
        self.home = assign_buckets(spec.nodes, spec.buckets)
        self.table = list(self.home)
        self.live = list(spec.nodes)
        self.moved: dict[str, dict[int, str]] = {}  # node -> {bucket: where it went} at its down

    def _id(self, node: str) -> int:
        return self.spec.nodes.index(node) + 1

    def node_down(self, node: str) -> list[int]:
        """Move the buckets of a failed or departed node; return the buckets moved."""
        if node not in self.live or len(self.live) == 1:
            return []
        before = [self._id(n) for n in self.live]
        self.live.remove(node)
        if self.policy == "backup":
            heir = adopter(before, self.k, self._id(node), [self._id(n) for n in self.live])
            targets = [self.spec.nodes[heir - 1]] if heir else list(self.live)
        else:
            targets = list(self.live)
        moved = [b for b, n in enumerate(self.table) if n == node]
        for i, b in enumerate(moved):
            self.table[b] = targets[i % len(targets)]
        self.moved[node] = {b: self.table[b] for b in moved}
        return moved

    def node_up(self, node: str, kept_state: bool = False) -> list[int]:
        """Give a returning (ready) node its own buckets back; return the buckets moved.

        ``kept_state``: it is the incarnation that was judged down (only taken for dead:
        a false alarm, or a pause); it still carries every connection it carried, those
        it had adopted from a failed node too, so it gets back every bucket its down
        moved away that has not moved since. A restarted node gets its own buckets only:
        what it had adopted is its heir's now."""
        if node in self.live or node not in self.spec.nodes:
            return []
        self.live = [n for n in self.spec.nodes if n in self.live or n == node]
        moved = self.moved.pop(node, {})
        back = [b for b in range(len(self.table)) if self.table[b] != node and (
            self.home[b] == node or kept_state and moved.get(b) == self.table[b]
            and self.home[b] not in self.live)]
        for b in back:
            self.table[b] = node
        return back

    def relearn(self, table: list) -> None:
        """Take the bucket table a switch still holds (after a controller restart)."""
        if len(table) != self.spec.buckets or any(n not in self.spec.nodes for n in table):
            raise ValueError("the switch's bucket table does not fit the cluster spec")
        self.table = list(table)
        self.live = [n for n in self.spec.nodes if n in set(table)]

    @property
    def designated(self) -> str:
        """The node that carries non-IP frames (ARP)."""
        return self.live[0]

    def flows(self) -> dict[int, list[FlowSpec]]:
        """Every flow of every switch for the current table."""
        return {dpid: self._switch_flows(sw) for dpid, sw in self.spec.switches.items()}

    def _switch_flows(self, sw: SwitchSpec) -> list[FlowSpec]:
        """``switch_flows`` of ``sw`` as this spec hashes: the inside switch on another
        basis when asymmetric, every packet by its addresses when by_addresses."""
        basis = 1 if self.spec.asymmetric and sw.role == "inside" else 0
        return switch_flows(sw, self.table, self.designated, basis,
                            L3 if self.spec.by_addresses else L3L4)

    def changed_flows(self, buckets: list[int]) -> dict[int, list[FlowSpec]]:
        """The flows to rewrite after ``buckets`` moved (and the designated node)."""
        out = {}
        for dpid, sw in self.spec.switches.items():
            flows = [f for f in self._switch_flows(sw)
                     if (f.table == TABLE_BUCKETS and f.match["reg0"] in buckets)
                     or (f.table == TABLE_CLASSIFY and f.priority == 50)]
            out[dpid] = flows
        return out

    def table_from_flows(self, sw: SwitchSpec, outputs: dict[int, int]) -> list | None:
        """The bucket table a switch holds, from its bucket -> output port flows."""
        by_port = {p: n for n, p in sw.node_ports.items()}
        if sorted(outputs) != list(range(self.spec.buckets)):
            return None
        return [by_port.get(outputs[b]) for b in range(self.spec.buckets)]
