"""The ordered rule set of stateful screening (the seed's Figure 2).

File format, one rule a line, ``#`` starts a comment::

    # src            dst              proto  dport       action  [helper=NAME]
    10.0.0.0/25      10.0.0.128/25    tcp    21          accept  helper=ftp
    any              any              icmp   any         accept
    10.0.0.0/24      any              udp    1024-65535  drop

    fd00::/64        fd00::c8/125     tcp    21          accept  helper=ftp
    any              any              icmpv6 any         accept

``src`` and ``dst`` are an IPv4 or IPv6 address, a CIDR prefix or ``any``; a rule
with an IPv4 address or prefix matches only IPv4 packets, one with IPv6 only IPv6,
and ``any any`` both (as nftables' ``inet`` family; a rule cannot mix the two);
``proto`` is ``tcp``, ``udp``, ``icmp``, ``icmpv6``, ``any`` or a protocol number;
``dport`` is a port, a range ``lo-hi`` or ``any`` (ignored for ICMP and ICMPv6);
``action`` is ``accept`` or
``drop``. ``helper=ftp`` attaches the FTP protocol-specific code to the
connections the rule accepts. The first rule that matches decides; a packet
that matches none is dropped (the implicit final deny).
"""
from __future__ import annotations

from dataclasses import dataclass

from nodes.packet import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ip_bytes

PROTOCOLS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP, "icmpv6": PROTO_ICMPV6}
ACTIONS = ("accept", "drop")
HELPERS = ("ftp",)


class RuleError(ValueError):
    """A rule file that cannot be read; the message names file, line and fix."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of the rule set: header fields to match and the action."""

    src_net: int
    src_mask: int
    dst_net: int
    dst_mask: int
    proto: int | None  # None: any
    dport_lo: int
    dport_hi: int
    action: str
    helper: str | None = None
    text: str = ""
    lineno: int = 0
    family: int = 0  # 4 or 6: the family its addresses name; 0: any (both are "any")

    def matches(self, proto: int, src: int, dst: int, dport: int, family: int = 4) -> bool:
        """True when the packet's header fields fall within this rule."""
        if self.proto is not None and proto != self.proto:
            return False
        if self.family and family != self.family:
            return False
        if src & self.src_mask != self.src_net or dst & self.dst_mask != self.dst_net:
            return False
        if proto in (PROTO_TCP, PROTO_UDP):
            return self.dport_lo <= dport <= self.dport_hi
        return True


def _net(text: str) -> tuple[int, int, int]:
    """(network, mask, family) of an address, a prefix or ``any`` (family 0)."""
    if text == "any":
        return 0, 0, 0
    addr, _, plen = text.partition("/")
    packed = ip_bytes(addr)
    width = len(packed) * 8
    bits = int(plen) if plen else width
    if not 0 <= bits <= width:
        raise ValueError(f"prefix length {bits} is not 0..{width}")
    mask = ((1 << width) - 1) ^ ((1 << (width - bits)) - 1)
    return int.from_bytes(packed, "big") & mask, mask, 4 if width == 32 else 6


def _ports(text: str) -> tuple[int, int]:
    if text == "any":
        return 0, 65535
    lo, _, hi = text.partition("-")
    lo_i, hi_i = int(lo), int(hi or lo)
    if not 0 <= lo_i <= hi_i <= 65535:
        raise ValueError(f"port range {text!r} is not within 0..65535, low to high")
    return lo_i, hi_i


def _proto(text: str) -> int | None:
    if text == "any":
        return None
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    if text.isdigit() and int(text) < 256:
        return int(text)
    raise ValueError(f"unknown protocol {text!r} (use tcp, udp, icmp, icmpv6, any or a number)")


def parse_rule(line: str, lineno: int = 0) -> Rule | None:
    """Parse one line; None for blank and comment lines; ValueError when bad."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    fields = text.split()
    if len(fields) < 5:
        raise ValueError("a rule needs 5 fields: src dst proto dport action")
    src, dst, proto, dport, action, *options = fields
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (use accept or drop)")
    helper = None
    for opt in options:
        name, _, value = opt.partition("=")
        if name != "helper" or value not in HELPERS:
            raise ValueError(f"unknown option {opt!r} (the only option is helper=ftp)")
        helper = value
    src_net, src_mask, src_family = _net(src)
    dst_net, dst_mask, dst_family = _net(dst)
    if src_family and dst_family and src_family != dst_family:
        raise ValueError(f"{src} and {dst} are of different families (write one rule each)")
    proto_no = _proto(proto)
    family = src_family or dst_family
    if (proto_no, family) in ((PROTO_ICMP, 6), (PROTO_ICMPV6, 4)):
        raise ValueError(f"{proto} does not go with IPv{family} addresses "
                         f"(icmp is IPv4's, icmpv6 IPv6's)")
    lo, hi = _ports(dport)
    return Rule(src_net, src_mask, dst_net, dst_mask, proto_no, lo, hi,
                action, helper, text, lineno, family)


class RuleSet:
    """An ordered list of rules; first match wins, no match means drop."""

    def __init__(self, rules: list[Rule]):
        self.rules = list(rules)

    @classmethod
    def from_text(cls, text: str, origin: str = "<rules>") -> "RuleSet":
        rules = []
        for n, line in enumerate(text.splitlines(), 1):
            try:
                rule = parse_rule(line, n)
            except ValueError as err:
                raise RuleError(f"{origin}:{n}: {err}") from None
            if rule:
                rules.append(rule)
        return cls(rules)

    @classmethod
    def from_file(cls, path: str) -> "RuleSet":
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_text(fh.read(), path)
        except OSError as err:
            raise RuleError(f"cannot read rule file {path}: {err.strerror}") from None

    def match(self, proto: int, src: bytes, dst: bytes, dport: int) -> Rule | None:
        """The first rule that matches, or None (the implicit final deny)."""
        s = int.from_bytes(src, "big")
        d = int.from_bytes(dst, "big")
        family = 4 if len(src) == 4 else 6
        for rule in self.rules:
            if rule.matches(proto, s, d, dport, family):
                return rule
        return None
