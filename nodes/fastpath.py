"""The fast path: which established connections the node's kernel forwards itself.

Real gateways do not run every packet of an established connection through
their full engine (Check Point's SecureXL, nftables' flowtables, Open
vSwitch's megaflows). Here the gateway engine decides and the node's kernel
forwards: once the engine has accepted a connection, its TCP state is
ESTABLISHED (UDP: a reply was seen), it has no protocol helper and no held
packet, and its entry has reached the backup nodes where the sync
replicates (``request_sync``, the same acknowledgement a held packet waits
for), its two directions' 5-tuples go into a kernel set whose packets are
forwarded port to port without the engine (nodes/shell/fastpath.py: an
nftables netdev ingress hook and ``fwd``, the mechanism this kernel has).
Packets that can change the state never match: TCP with SYN, FIN or RST,
fragments, IPv6 with extension headers; they reach the engine, which
withdraws the connection when its state moves.

What the fast path does not check, as nftables' flowtable does not: TCP
windows (while a connection is offloaded its replicated window is sent as
unknown, ``maxwin`` 0, and the engine learns it again from the next segment
it sees, as Linux's ``flow_offload_fixup_tcp``; and, as Linux does, the engine
tracks an offloaded connection's windows liberally from then on, also once it
is back on the slow path and on the backups that take it over), checksums (the engine checks
them only on packets that change state anyway) and the port a packet came in
on (neither does the engine).

The engine keeps what it reports right: ``account`` adds the kernel's per
direction packet and byte counters to the entry (and refreshes its idle
timeout), and a connection is withdrawn when it closes, expires, changes
owner, is removed by the sync, or when the fast path is switched off.

Pure: entries in, element changes and counters out; nothing here does I/O.
"""
from __future__ import annotations

import ipaddress
import json
from collections import Counter

from nodes.conntrack import ESTABLISHED, ETH_HEADER, REPLIED, Entry
from nodes.packet import PROTO_TCP, PROTO_UDP, key_tuple, make_key, reverse
from nodes.tcpwindow import BE_LIBERAL

NONE, PENDING, OFFLOADED = 0, 1, 2  # Entry.fast
TABLE = "fwcluster_fast"
SETS = {4: "fast4", 16: "fast6"}  # by address length
SYNC_SET = "sync"  # empty: listing it tells the shell that nft has done what came before
_PROTO_NAMES = {"tcp": PROTO_TCP, "udp": PROTO_UDP}
_ELIGIBLE = {PROTO_TCP: ESTABLISHED, PROTO_UDP: REPLIED}


class FastPath:
    """The offloaded connections of one node, and the changes the kernel is to make.

    ``on``: offload new connections (``set fastpath=on``); ``max_connections``:
    connections offloaded at most (each is two kernel set elements)."""

    def __init__(self, node: str, max_connections: int = 65536):
        self.node = node
        self.on = False
        self.max_connections = max_connections
        self.pending: dict[Entry, object] = {}    # waiting for replication: entry -> ticket
        self.offloaded: dict[Entry, list] = {}    # in the kernel: entry -> last counters read
        self.to_add: list[Entry] = []             # to put into the kernel (next ``take``)
        self.to_remove: list[bytes] = []          # element keys to take out of it
        self.closing: dict[Entry, list] = {}      # withdrawn: counters not read yet
        self.counters: Counter = Counter()

    def __len__(self) -> int:
        return len(self.offloaded)

    # -- what the gateway engine calls --------------------------------------------
    def consider(self, entry: Entry, held: bool, sync, now: float) -> None:
        """A packet of my connection ``entry`` was accepted: offload it if it is ready."""
        if (entry.helper is not None or held or _ELIGIBLE.get(entry.orig[0]) != entry.state
                or entry.owner != self.node):
            return
        if len(self.offloaded) + len(self.pending) >= self.max_connections:
            self.counters["fastpath_full"] += 1
            return
        entry.fast = PENDING
        # the entry goes to its backups with its window marked unknown (Replication's
        # _window_fields); the kernel forwards once they have acknowledged it. A sync
        # that gives no ticket (periodic, or no hold) sends it as it sends any change.
        ticket = sync.request_sync("fastpath", [entry], now)
        if ticket is None:
            sync.state_changed("update", entry, now)
        self.pending[entry] = ticket

    def withdraw(self, entry: Entry, why: str) -> None:
        """Take ``entry`` off the fast path; the engine sees its packets again."""
        if entry.fast == PENDING:
            del self.pending[entry]
        elif entry.fast == OFFLOADED:
            self.closing[entry] = self.offloaded.pop(entry)
            self.to_remove += [entry.orig, reverse(entry.orig)]
            self.counters[f"fastpath_withdrawn_{why}"] += 1
        else:
            return
        entry.fast = NONE
        fixup(entry)

    def withdraw_all(self, why: str) -> None:
        for entry in list(self.pending) + list(self.offloaded):
            self.withdraw(entry, why)

    # -- what the shell calls -------------------------------------------------------
    def take(self, sync, now: float) -> tuple[list[bytes], list[bytes]]:
        """The element keys to add and to remove now: connections whose replication
        completed go in; withdrawn ones come out."""
        for entry, ticket in list(self.pending.items()):
            if ticket is None or sync.done(ticket, now):
                del self.pending[entry]
                entry.fast = OFFLOADED
                fixup(entry)  # from now on the engine does not see its segments
                self.offloaded[entry] = [0, 0, 0, 0]
                self.to_add.append(entry)
                self.counters["fastpath_offloads"] += 1
        adds = [k for e in self.to_add if e.fast == OFFLOADED for k in (e.orig, reverse(e.orig))]
        removes, self.to_add, self.to_remove = self.to_remove, [], []
        return adds, removes

    def has_changes(self) -> bool:
        return bool(self.pending or self.to_add or self.to_remove)

    def account(self, readings: dict, table, now: float, expiry) -> None:
        """Add the kernel's counters (``readings``: element key -> (packets, L3 bytes),
        both since the element went in) to the entries; ``expiry(entry)``: its idle
        timeout. An offloaded entry that has left the table or changed owner (the sync
        removed or reassigned it) is withdrawn, as is one whose elements are gone."""
        closing, self.closing = self.closing, {}
        for entry, last in list(self.offloaded.items()) + list(closing.items()):
            orig, reply = readings.get(entry.orig), readings.get(reverse(entry.orig))
            if orig is None or reply is None:
                if entry.fast == OFFLOADED:  # someone flushed the kernel's set
                    self.withdraw(entry, "lost")
                continue
            dp0, dp1 = orig[0] - last[0], reply[0] - last[2]
            if dp0 < 0 or dp1 < 0:  # counters that went back: the element was replaced
                last[:] = [0, 0, 0, 0]
                dp0, dp1 = orig[0], reply[0]
            if dp0:
                entry.packets_orig += dp0
                entry.bytes_orig += orig[1] - last[1] + ETH_HEADER * dp0
            if dp1:
                entry.packets_reply += dp1
                entry.bytes_reply += reply[1] - last[3] + ETH_HEADER * dp1
            if dp0 or dp1:
                entry.expires = now + expiry(entry)
                self.counters["fastpath_packets"] += dp0 + dp1
            last[:] = [orig[0], orig[1], reply[0], reply[1]]
            if entry.fast == OFFLOADED and (table.by_key.get(entry.orig) is not entry
                                            or entry.owner != self.node):
                self.withdraw(entry, "moved")  # its counters are in; it goes next
        self.closing.clear()  # what "moved" and "lost" put there was read just now

    def refused(self, adds: list[bytes]) -> None:
        """The kernel refused to add these elements: their connections go back to the
        engine."""
        keys = set(adds)
        for entry in [e for e in self.offloaded if e.orig in keys]:
            del self.offloaded[entry]
            entry.fast = NONE
            fixup(entry)
            self.counters["fastpath_refused"] += 1

    def stats(self) -> dict:
        return {"on": self.on, "offloaded": len(self.offloaded), "pending": len(self.pending),
                **self.counters}


def fixup(entry: Entry) -> None:
    """Forget what the window tracking knew (Linux's ``flow_offload_fixup_tcp``): the
    next segment the engine sees teaches it the window again. And track both directions
    liberally from now on, as Linux does with every offloaded connection
    (``flow_offload_ct_tcp`` in nft_flow_offload.c: conntrack does not see all its
    packets): the segment that teaches one direction's window may be older than what
    the other direction acknowledges (a retransmission through a backup whose
    acknowledgements died with the node whose kernel forwarded the rest)."""
    if entry.window is not None:
        for seen in entry.window:
            seen.maxwin = 0
            seen.flags |= BE_LIBERAL


# -- nftables text: what nodes/shell/fastpath.py hands to its nft session --------------
def ruleset(outside: str, inside: str, size: int) -> list[str]:
    """The netdev table, one nft command a line: a packet of an offloaded connection
    arriving on one port leaves by the other. Only unfragmented TCP without SYN, FIN
    or RST, and UDP, directly after the IP header (no IPv6 extension headers), are
    looked up. The table is its creator's (``flags owner``): the kernel removes it
    when the node's nft session ends, so a killed node's kernel forwards nothing."""
    lines = [f"add table netdev {TABLE} {{ flags owner; }}",
             f"add set netdev {TABLE} {SYNC_SET} {{ type inet_service; }}"]
    for length, name in SETS.items():
        addr = "ipv4_addr" if length == 4 else "ipv6_addr"
        lines.append(f"add set netdev {TABLE} {name} {{ type {addr} . {addr} . inet_proto . "
                     f"inet_service . inet_service; size {size}; counter; }}")
    for port, other in ((outside, inside), (inside, outside)):
        chain = f'from_{port.replace("-", "_")}'
        lines.append(f'add chain netdev {TABLE} {chain} {{ type filter hook ingress device '
                     f'"{port}" priority 0; policy accept; }}')
        for match in ("ip frag-off & 0x3fff == 0 meta l4proto tcp tcp flags & (fin|syn|rst) == 0",
                      "ip frag-off & 0x3fff == 0 meta l4proto udp",
                      "ip6 nexthdr tcp tcp flags & (fin|syn|rst) == 0",
                      "ip6 nexthdr udp"):
            family = "ip6" if match.startswith("ip6") else "ip"
            lines.append(f"add rule netdev {TABLE} {chain} {match} {family} saddr . "
                         f"{family} daddr . meta l4proto . th sport . th dport "
                         f'@{SETS[16 if family == "ip6" else 4]} fwd to "{other}"')
    return lines


def element(key: bytes) -> str:
    """A direction's key as a set element."""
    proto, src, sport, dst, dport = key_tuple(key)
    return (f"{ipaddress.ip_address(src)} . {ipaddress.ip_address(dst)} . {proto} . "
            f"{sport} . {dport}")


def changes(adds: list[bytes], removes: list[bytes]) -> str:
    """nft commands that remove, then add, the elements (a line a family and verb)."""
    out = []
    for verb, keys in (("delete", removes), ("add", adds)):
        for length, name in SETS.items():
            these = [element(k) for k in keys if len(k) == 2 * length + 5]
            if these:
                out.append(f"{verb} element netdev {TABLE} {name} {{ {', '.join(these)} }}")
    return "\n".join(out) + ("\n" if out else "")


def readings(text: str) -> dict:
    """``nft -j list table netdev ...`` as element key -> (packets, bytes)."""
    out = {}
    for item in json.loads(text).get("nftables", []):
        found = item.get("set")
        if not found or found.get("name") not in SETS.values():
            continue
        for elem in found.get("elem", []):
            body = elem.get("elem", elem)
            src, dst, proto, sport, dport = body["val"]["concat"]
            proto = _PROTO_NAMES.get(proto, proto)
            counter = body.get("counter", {})
            key = make_key(int(proto), ipaddress.ip_address(src).packed, int(sport),
                           ipaddress.ip_address(dst).packed, int(dport))
            out[key] = (counter.get("packets", 0), counter.get("bytes", 0))
    return out
