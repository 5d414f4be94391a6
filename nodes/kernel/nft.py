"""A rule file (nodes/rules.py) as an nftables ruleset, with the Python node's meaning.

The gateway engine decides a connection's opening by the first matching rule
and lets the rest of the connection through by its entry; everything else is
dropped. Here::

    ct state established,related accept        the entry (or an FTP expectation)
    icmpv6 type { ND, MLD } accept             the link's own, as ARP
    ct state invalid drop                      "invalid" (e.g. an echo reply alone)
    a TCP opening that is not a bare SYN: drop "tcp_no_entry" (as tcp_loose=0;
        with ``loose`` a bare ACK may open one too, as nf_conntrack_tcp_loose=1)
    the rules, first match wins; ``helper=ftp`` attaches the kernel's FTP helper
    drop                                       "policy" (the implicit final deny)

Frames other than IPv4, IPv6 and ARP are dropped in the bridge family ("ethertype"),
as the Python node drops them. Every drop goes through a named counter, so the
node's drops are counted by reason as far as nftables counts them; the inet
table's drops go through a chain per reason that also logs them to NFLOG
(nodes/kernel/nflog.py, LOG_RATE a second at most) for the node's event log.
"""
from __future__ import annotations

import ipaddress
import json

from nodes.kernel.nflog import GROUP, LOG_RATE
from nodes.packet import ICMPV6_MLD, ICMPV6_ND, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP
from nodes.rules import Rule, RuleSet

TABLE = "fwcluster"  # inet: the stateful filter
L2_TABLE = "fwcluster_l2"  # bridge: what is not IPv4 or ARP
HELPER = "ftp-standard"
DROPS = ("invalid", "tcp_no_entry", "policy")  # drop reasons of the inet table
PREFIX = "drop_"  # a drop's counter is drop_REASON ("policy" alone is a keyword of nft)
NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmpv6"}
# ICMPv6 of the link itself (neighbour and multicast listener discovery), passed untracked
# as the Python node passes it (nodes/packet.py: ICMPV6_ND, ICMPV6_MLD)
LINK_ICMPV6 = ", ".join(str(t) for t in sorted(ICMPV6_ND | ICMPV6_MLD))


def _net(net: int, mask: int, family: int) -> str | None:
    if mask == 0:
        return None
    plen = bin(mask).count("1")
    if family == 6:
        return str(ipaddress.IPv6Network((net, plen)))
    return str(ipaddress.IPv4Network((net, plen)))


def _ports(rule: Rule) -> str | None:
    if rule.dport_lo == 0 and rule.dport_hi == 65535:
        return None
    if rule.dport_lo == rule.dport_hi:
        return str(rule.dport_lo)
    return f"{rule.dport_lo}-{rule.dport_hi}"


def rule_lines(rule: Rule) -> list[str]:
    """The nft rule(s) of one line of the rule file."""
    match = []
    src = _net(rule.src_net, rule.src_mask, rule.family)
    dst = _net(rule.dst_net, rule.dst_mask, rule.family)
    ip = "ip6" if rule.family == 6 else "ip"
    if src:
        match.append(f"{ip} saddr {src}")
    if dst:
        match.append(f"{ip} daddr {dst}")
    if rule.family and not (src or dst):  # e.g. 0.0.0.0/0: the family alone
        match.append(f"meta nfproto ipv{rule.family}")
    ports = _ports(rule)
    if rule.action == "accept":
        verdict = (f'ct helper set "{HELPER}" ' if rule.helper == "ftp" else "") + \
            f'counter name "rule_{rule.lineno}" accept'
    else:
        verdict = f"goto {PREFIX}policy"
    if rule.proto in (PROTO_TCP, PROTO_UDP):
        proto = NAMES[rule.proto]
        return [" ".join(match + [f"meta l4proto {proto}"] +
                         ([f"{proto} dport {ports}"] if ports else []) + [verdict])]
    if rule.proto is not None:  # ICMP or a protocol number: ports do not apply
        return [" ".join(match + [f"meta l4proto {NAMES.get(rule.proto, rule.proto)}", verdict])]
    if ports is None:
        return [" ".join(match + [verdict])]
    # any protocol with ports: the ports bind TCP and UDP only, as in RuleSet.match
    return [" ".join(match + ["meta l4proto { tcp, udp }", f"th dport {ports}", verdict]),
            " ".join(match + ["meta l4proto != { tcp, udp }", verdict])]


def counters(rules: RuleSet) -> list[str]:
    return [PREFIX + d for d in DROPS] + [f"rule_{r.lineno}" for r in rules.rules
                                          if r.action == "accept"]


def ruleset(rules: RuleSet, loose: bool = False) -> str:
    """The whole ruleset, for ``nft -f``: it replaces the node's tables at once
    (``loose``: a bare ACK may open a connection, picked up mid-stream)."""
    openers = "{ syn, ack }" if loose else "syn"
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}",
             f"table bridge {L2_TABLE}", f"delete table bridge {L2_TABLE}",
             f"table inet {TABLE} {{",
             f'    ct helper {HELPER} {{ type "ftp" protocol tcp; l3proto inet; }}']
    lines += [f"    counter {name} {{ }}" for name in counters(rules)]
    for reason in DROPS:  # a drop is logged (LOG_RATE a second at most), counted, dropped
        lines += [f"    chain {PREFIX}{reason} {{",
                  f"        limit rate {LOG_RATE}/second burst {LOG_RATE} packets"
                  f' log group {GROUP} prefix "{reason}"',
                  f'        counter name "{PREFIX}{reason}" drop', "    }"]
    lines += ["    chain forward {",
              "        type filter hook forward priority filter; policy drop;",
              "        ct state established,related accept",
              f"        icmpv6 type {{ {LINK_ICMPV6} }} accept",
              f"        ct state invalid goto {PREFIX}invalid",
              f"        meta l4proto tcp tcp flags & (fin | syn | rst | ack) != {openers}"
              f" goto {PREFIX}tcp_no_entry"]
    for rule in rules.rules:
        lines += [f"        {line}  # line {rule.lineno}: {rule.text}" for line in rule_lines(rule)]
    lines += [f"        goto {PREFIX}policy", "    }", "}",
              f"table bridge {L2_TABLE} {{",
              f"    counter {PREFIX}ethertype {{ }}",
              "    chain forward {",
              "        type filter hook forward priority filter; policy accept;",
              "        ether type { ip, ip6, arp } accept",
              f'        counter name "{PREFIX}ethertype" drop',
              "    }", "}"]
    return "\n".join(lines) + "\n"


def drops(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Packets dropped by reason, from ``read_counters``."""
    return {name[len(PREFIX):]: c["packets"] for name, c in counts.items()
            if name.startswith(PREFIX)}


def read_counters(listing: str) -> dict[str, dict[str, int]]:
    """``nft -j list counters`` output as {name: {"packets": n, "bytes": n}}."""
    out = {}
    for item in json.loads(listing).get("nftables", []):
        counter = item.get("counter")
        if counter and counter.get("table") in (TABLE, L2_TABLE):
            out[counter["name"]] = {"packets": counter.get("packets", 0),
                                    "bytes": counter.get("bytes", 0)}
    return out
