"""Parse Ethernet/IPv4 and Ethernet/IPv6 frames into the fields the gateway engine needs.

Pure: bytes in, a ``Packet`` or a drop reason out. Never raises on input. A key's
addresses are 4 bytes (IPv4) or 16 (IPv6), so one connection table holds both
families and a key's family is the length of its addresses.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
# ICMP errors, which quote the header of the packet they concern (RFC 792):
# destination unreachable, source quench, redirect, time exceeded, parameter problem
ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129
# ICMPv6 errors (RFC 4443): destination unreachable, packet too big, time exceeded,
# parameter problem; each quotes as much of the packet it concerns as fits
ICMPV6_ERRORS = frozenset((1, 2, 3, 4))
# ICMPv6 of the link itself, passed as ARP is: neighbour discovery (RFC 4861: router
# and neighbour solicitation and advertisement, redirect) and multicast listener
# discovery (RFC 2710, 3810); link-scoped, never tracked (as Linux's nf_conntrack_icmpv6)
ICMPV6_ND = frozenset((133, 134, 135, 136, 137))
ICMPV6_MLD = frozenset((130, 131, 132, 143))
# per protocol: the echo request's and reply's types and the error types
ECHO_REQUEST = {PROTO_ICMP: ICMP_ECHO_REQUEST, PROTO_ICMPV6: ICMPV6_ECHO_REQUEST}
ECHO_REPLY = {PROTO_ICMP: ICMP_ECHO_REPLY, PROTO_ICMPV6: ICMPV6_ECHO_REPLY}
ERRORS = {PROTO_ICMP: ICMP_ERRORS, PROTO_ICMPV6: ICMPV6_ERRORS}
# IPv6 extension headers skipped to reach the upper layer, as Linux's ipv6_skip_exthdr:
# hop-by-hop, routing, destination options (length in 8-byte units after the first 8),
# authentication (4-byte units after the first 8); a fragment header is 8 bytes
_EXT_HEADERS = frozenset((0, 43, 60))
_AH, _FRAG6, _NO_NEXT = 51, 44, 59

_ETH = struct.Struct("!6s6sH")
_IP = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HHIIBBH")
_ICMP_ECHO = struct.Struct("!BBHH")
_IP6 = struct.Struct("!IHBB16s16s")

# A key names one direction of a connection: proto, src, sport, dst, dport packed in
# network order into one string, 13 bytes for IPv4 and 37 for IPv6 (the sync protocol's
# connection key, nodes/syncproto.py). One object a key, not a tuple of five: a table of
# a million connections held 190 bytes of key per entry as tuples, 48 packed, and a
# bulk transfer made five objects less a record. The other direction's key swaps the
# two halves after the protocol byte (``reverse``). For ICMP and ICMPv6 echo the
# identifier stands in a port slot (sport for a request, dport for a reply) so both
# directions pair up. ``make_key`` makes one, ``key_tuple`` takes one apart.
Key = bytes
KEY4 = struct.Struct("!B4sH4sH")
KEY6 = struct.Struct("!B16sH16sH")


@dataclass(slots=True)
class Packet:
    """The header fields of one IPv4 or IPv6 packet, and where its payload starts."""

    key: Key
    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    flags: int = 0  # TCP flags
    seq: int = 0
    ack: int = 0
    payload_off: int = 0  # offset of L4 payload within the frame
    payload_end: int = 0
    icmp_type: int = -1
    length: int = 0  # frame length
    window: int = 0  # TCP: the advertised window, unscaled
    l4: int = 0  # TCP: offset of the TCP header (its options run from l4 + 20 to payload_off)


def ip_str(addr: bytes) -> str:
    """Text of an address: a dotted quad, or IPv6's compressed form (RFC 5952)."""
    if len(addr) == 4:
        return "%d.%d.%d.%d" % tuple(addr)
    return ipaddress.IPv6Address(addr).compressed


def ip_bytes(text: str) -> bytes:
    """4- or 16-byte address of an IPv4 or IPv6 address's text; ValueError on bad input."""
    try:
        return ipaddress.ip_address(text).packed
    except ValueError:
        raise ValueError(f"not an IPv4 or IPv6 address: {text!r}") from None


def family(addr: bytes) -> int:
    """4 or 6: the IP version of an address (or of a key, by its source address)."""
    return 4 if len(addr) == 4 else 6


PROTO_NAMES = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp", PROTO_ICMPV6: "icmpv6"}


def make_key(proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> Key:
    """The key of one direction (4- or 16-byte addresses)."""
    return (KEY4 if len(src) == 4 else KEY6).pack(proto, src, sport, dst, dport)


def key_tuple(key: Key) -> tuple:
    """(proto, src, sport, dst, dport) of a key."""
    return (KEY4 if len(key) == 13 else KEY6).unpack(key)


def key_str(key: Key) -> str:
    """Human form of a key, as conntrack prints one direction."""
    proto, src, sport, dst, dport = key_tuple(key)
    name = PROTO_NAMES.get(proto, str(proto))
    return f"{name} src={ip_str(src)} dst={ip_str(dst)} sport={sport} dport={dport}"


def key_fields(key: Key) -> dict:
    """A key as JSON fields (proto number, addresses as text, ports): what logs and
    the analysis read, so nothing parses the display text of ``key_str``."""
    proto, src, sport, dst, dport = key_tuple(key)
    return {"proto": proto, "src": ip_str(src), "sport": sport, "dst": ip_str(dst),
            "dport": dport}


def reverse(key: Key) -> Key:
    """The key of the other direction of the same connection: its halves swapped."""
    h = (len(key) >> 1) + 1  # 7 or 19: after the protocol, an address and a port
    return key[:1] + key[h:] + key[1:h]


def canonical(key: Key) -> Key:
    """One key for both directions of a connection: the direction whose source
    (address, then port) is the lower, without making the reverse to compare. (The
    connection table indexes an entry by its own key instead; the home node's forward
    table, nodes/home.py, by this.)"""
    h = (len(key) >> 1) + 1  # 7 or 19: where the destination's half begins
    return key if key[1:h] <= key[h:] else reverse(key)


def ethertype(frame: bytes) -> int:
    """The frame's EtherType, or -1 when the frame is shorter than a header."""
    if len(frame) < 14:
        return -1
    return (frame[12] << 8) | frame[13]


def _fold(data: bytes) -> int:
    """The ones' complement sum of ``data`` in 16-bit words (RFC 1071), folded."""
    if len(data) & 1:
        data += b"\0"
    total = sum(memoryview(data).cast("H"))  # either byte order: the check is 0xFFFF
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksums_ok(frame: bytes) -> bool:
    """True if the IPv4 header and TCP/UDP/ICMP checksums of a parsed frame hold
    (IPv6: the TCP/UDP/ICMPv6 checksum over its pseudo-header; IPv6 has no header
    checksum).

    As Linux conntrack (``nf_conntrack_checksum``) it keeps no state for a packet
    that fails; UDP's checksum 0 means none was sent."""
    if frame[14] >> 4 == 6:
        return _checksum6_ok(frame)
    ihl = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    if _fold(frame[14:14 + ihl]) != 0xFFFF:
        return False
    proto = frame[23]
    l4 = frame[14 + ihl:14 + total]
    if proto == PROTO_TCP or (proto == PROTO_UDP and l4[6:8] != b"\0\0"):
        pseudo = frame[26:34] + bytes((0, proto)) + len(l4).to_bytes(2, "big")
        return _fold(pseudo + l4) == 0xFFFF
    if proto == PROTO_ICMP:
        return _fold(l4) == 0xFFFF
    return True


def _checksum6_ok(frame: bytes) -> bool:
    walked = _upper_layer6(frame, 14, 14 + 40 + int.from_bytes(frame[18:20], "big"))
    if walked.__class__ is str:
        return False
    proto, l4, end = walked
    data = frame[l4:end]
    if proto in (PROTO_TCP, PROTO_ICMPV6) or (proto == PROTO_UDP and data[6:8] != b"\0\0"):
        pseudo = frame[22:54] + len(data).to_bytes(4, "big") + bytes((0, 0, 0, proto))
        return _fold(pseudo + data) == 0xFFFF
    return True


def _upper_layer6(frame: bytes, off: int, end: int,
                  fragments: bool = False) -> tuple[int, int, int] | str:
    """Walk an IPv6 header at ``off`` and its extension headers: (upper-layer protocol,
    its offset, the packet's end), or a drop reason ("fragment" for a fragment that is
    not the whole datagram; RFC 6946's atomic fragment is parsed through). With
    ``fragments``, a fragment header ends the walk: (44, the offset of the byte that
    names it as the next header, the fragment header's offset)."""
    proto, pos, names = frame[off + 6], off + 40, off + 6
    for _ in range(8):  # more extension headers than this is not traffic (RFC 8200 §4.1)
        if proto in _EXT_HEADERS or proto == _AH:
            if end - pos < 8:
                return "truncated_ipv6_ext"
            size = (frame[pos + 1] + 2) * 4 if proto == _AH else (frame[pos + 1] + 1) * 8
            proto, pos, names = frame[pos], pos + size, pos
        elif proto == _FRAG6:
            if end - pos < 8:
                return "truncated_ipv6_ext"
            if fragments:
                return _FRAG6, names, pos
            if int.from_bytes(frame[pos + 2:pos + 4], "big") & 0xFFF9:  # offset or M
                return "fragment"
            proto, pos, names = frame[pos], pos + 8, pos
        else:
            if pos > end:
                return "truncated_ipv6_ext"
            return proto, pos, end
    return "ipv6_ext_chain"


def fragment_header6(frame: bytes) -> tuple[int, int, int] | str:
    """Of an IPv6-in-Ethernet fragment: (the offset of the byte naming the fragment
    header as the next header, the fragment header's offset, the packet's end), or a
    drop reason."""
    if len(frame) < 54 or frame[14] >> 4 != 6:
        return "truncated_ipv6"
    end = 54 + int.from_bytes(frame[18:20], "big")
    if end > len(frame):
        return "truncated_ipv6"
    walked = _upper_layer6(frame, 14, end, fragments=True)
    if walked.__class__ is str:
        return walked
    if walked[0] != _FRAG6:
        return "not_a_fragment"
    return walked[1], walked[2], end


def _echo_ports(itype: int, ident: int, proto: int) -> tuple[int, int]:
    """The port slots of an ICMP or ICMPv6 packet's key: an echo's identifier in the
    slot of its direction."""
    if itype == ECHO_REQUEST[proto]:
        return ident, 0
    if itype == ECHO_REPLY[proto]:
        return 0, ident
    return 0, 0


def parse_ipv4(frame: bytes) -> Packet | str:
    """Parse an IPv4-in-Ethernet frame; return a Packet or a drop reason."""
    n = len(frame)
    if n < 34:
        return "truncated_ip"
    vihl, _tos, total, _id, frag, _ttl, proto, _csum, src, dst = _IP.unpack_from(frame, 14)
    if vihl >> 4 != 4:
        return "bad_ip_version"
    ihl = (vihl & 0x0F) * 4
    if ihl < 20:
        return "bad_ihl"
    if total < ihl or 14 + total > n:
        return "truncated_ip" if 14 + total > n else "bad_ip_length"
    if frag & 0x3FFF:  # MF set or a non-zero offset
        return "fragment"
    l4 = 14 + ihl
    end = 14 + total
    if proto == PROTO_TCP:
        if end - l4 < 20:
            return "truncated_tcp"
        sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(frame, l4)
        doff = (doff >> 4) * 4
        if doff < 20 or l4 + doff > end:
            return "bad_tcp_doff"
        return Packet(KEY4.pack(proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      flags, seq, ack, l4 + doff, end, -1, n, window, l4)
    if proto == PROTO_UDP:
        if end - l4 < 8:
            return "truncated_udp"
        sport, dport = _PORTS.unpack_from(frame, l4)
        return Packet(KEY4.pack(proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      0, 0, 0, l4 + 8, end, -1, n)
    if proto == PROTO_ICMP:
        if end - l4 < 8:
            return "truncated_icmp"
        itype, _code, _c, ident = _ICMP_ECHO.unpack_from(frame, l4)
        sport, dport = _echo_ports(itype, ident, proto)
        return Packet(KEY4.pack(proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      0, 0, 0, l4 + 8, end, itype, n)
    return Packet(KEY4.pack(proto, src, 0, dst, 0), proto, src, dst, 0, 0, 0, 0, 0, l4, end, -1, n)


def parse_ipv6(frame: bytes) -> Packet | str:
    """Parse an IPv6-in-Ethernet frame, through its extension headers; return a
    Packet or a drop reason."""
    n = len(frame)
    if n < 54:
        return "truncated_ipv6"
    vtf, plen, _nxt, _hop, src, dst = _IP6.unpack_from(frame, 14)
    if vtf >> 28 != 6:
        return "bad_ip_version"
    end = 54 + plen
    if end > n:
        return "truncated_ipv6"
    if plen == 0 and _nxt == 0:
        return "ipv6_jumbogram"  # RFC 2675: not on an Ethernet
    walked = _upper_layer6(frame, 14, end)
    if walked.__class__ is str:
        return walked
    proto, l4, end = walked
    return _upper(frame, proto, src, dst, l4, end, n)


def _upper(frame: bytes, proto: int, src: bytes, dst: bytes, l4: int, end: int,
           n: int) -> Packet | str:
    """The Packet of an IPv6 packet's upper layer at ``l4`` (IPv4's is parse_ipv4's own,
    inlined: it is the hot path)."""
    if proto == PROTO_TCP:
        if end - l4 < 20:
            return "truncated_tcp"
        sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(frame, l4)
        doff = (doff >> 4) * 4
        if doff < 20 or l4 + doff > end:
            return "bad_tcp_doff"
        return Packet(KEY6.pack(proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      flags, seq, ack, l4 + doff, end, -1, n, window, l4)
    if proto == PROTO_UDP:
        if end - l4 < 8:
            return "truncated_udp"
        sport, dport = _PORTS.unpack_from(frame, l4)
        return Packet(KEY6.pack(proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      0, 0, 0, l4 + 8, end, -1, n)
    if proto == PROTO_ICMPV6:
        if end - l4 < 8:
            return "truncated_icmp"
        itype, _code, _c, ident = _ICMP_ECHO.unpack_from(frame, l4)
        sport, dport = _echo_ports(itype, ident, proto)
        return Packet(KEY6.pack(proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      0, 0, 0, l4 + 8, end, itype, n)
    return Packet(KEY6.pack(proto, src, 0, dst, 0), proto, src, dst, 0, 0, 0, 0, 0, l4, end, -1, n)


def parse(frame: bytes) -> Packet | str | None:
    """Parse an IPv4 or IPv6 frame; None for other EtherTypes."""
    et = ethertype(frame)
    if et == ETH_P_IP:
        return parse_ipv4(frame)
    if et == ETH_P_IPV6:
        return parse_ipv6(frame)
    return None


def quoted_key(frame: bytes, off: int, end: int, version: int = 4) -> Key | None:
    """The key of the packet an ICMP (``version`` 4) or ICMPv6 (6) error quotes (its IP
    header and at least 8 bytes from ``off``), as ``parse_ipv4`` or ``parse_ipv6`` keys
    that packet; None when too short or of another IP version."""
    if version == 6:
        if end - off < 48 or frame[off] >> 4 != 6:
            return None
        walked = _upper_layer6(frame, off, end)
        if walked.__class__ is str or walked[2] - walked[1] < 8:
            return None
        proto, l4, _ = walked
        return _quoted(frame, proto, frame[off + 8:off + 24], frame[off + 24:off + 40], l4,
                       PROTO_ICMPV6)
    if end - off < 20 or frame[off] >> 4 != 4:
        return None
    ihl = (frame[off] & 0x0F) * 4
    if ihl < 20 or end - off < ihl + 8:
        return None
    return _quoted(frame, frame[off + 9], frame[off + 12:off + 16], frame[off + 16:off + 20],
                   off + ihl, PROTO_ICMP)


def _quoted(frame: bytes, proto: int, src: bytes, dst: bytes, l4: int, icmp: int) -> Key:
    """A quoted packet's key from its upper layer's first 8 bytes at ``l4``."""
    if proto in (PROTO_TCP, PROTO_UDP):
        sport, dport = _PORTS.unpack_from(frame, l4)
        return make_key(proto, src, sport, dst, dport)
    if proto == icmp:
        itype, _code, _c, ident = _ICMP_ECHO.unpack_from(frame, l4)
        sport, dport = _echo_ports(itype, ident, proto)
        return make_key(proto, src, sport, dst, dport)
    return make_key(proto, src, 0, dst, 0)
