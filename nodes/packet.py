"""Parse Ethernet/IPv4 frames into the fields the gateway engine needs.

Pure: bytes in, a ``Packet`` or a drop reason out. Never raises on input.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8
# ICMP errors, which quote the header of the packet they concern (RFC 792):
# destination unreachable, source quench, redirect, time exceeded, parameter problem
ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))

_ETH = struct.Struct("!6s6sH")
_IP = struct.Struct("!BBHHHBBH4s4s")
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HHIIBBH")
_ICMP_ECHO = struct.Struct("!BBHH")

# A key names one direction of a connection: (proto, src, sport, dst, dport).
# Addresses are 4-byte strings; for ICMP echo the identifier stands in a port
# slot (sport for a request, dport for a reply) so both directions pair up.
Key = tuple


@dataclass(slots=True)
class Packet:
    """The header fields of one IPv4 packet, and where its payload starts."""

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
    """Dotted quad of a 4-byte address."""
    return "%d.%d.%d.%d" % tuple(addr)


def ip_bytes(text: str) -> bytes:
    """4-byte address of a dotted quad; raises ValueError on bad input."""
    try:
        return ipaddress.IPv4Address(text).packed
    except ValueError:
        raise ValueError(f"not an IPv4 address: {text!r}") from None


def key_str(key: Key) -> str:
    """Human form of a key, as conntrack prints one direction."""
    proto, src, sport, dst, dport = key
    name = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp"}.get(proto, str(proto))
    return f"{name} src={ip_str(src)} dst={ip_str(dst)} sport={sport} dport={dport}"


def key_fields(key: Key) -> dict:
    """A key as JSON fields (proto number, addresses as text, ports): what logs and
    the analysis read, so nothing parses the display text of ``key_str``."""
    proto, src, sport, dst, dport = key
    return {"proto": proto, "src": ip_str(src), "sport": sport, "dst": ip_str(dst),
            "dport": dport}


def reverse(key: Key) -> Key:
    """The key of the other direction of the same connection."""
    proto, src, sport, dst, dport = key
    return (proto, dst, dport, src, sport)


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
    """True if the IPv4 header and TCP/UDP/ICMP checksums of a parsed frame hold.

    As Linux conntrack (``nf_conntrack_checksum``) it keeps no state for a packet
    that fails; UDP's checksum 0 means none was sent."""
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


def _icmp_key(src: bytes, dst: bytes, itype: int, ident: int) -> Key:
    """An ICMP packet's key: an echo's identifier in the port slot of its direction."""
    if itype == ICMP_ECHO_REQUEST:
        return (PROTO_ICMP, src, ident, dst, 0)
    if itype == ICMP_ECHO_REPLY:
        return (PROTO_ICMP, src, 0, dst, ident)
    return (PROTO_ICMP, src, 0, dst, 0)


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
        return Packet((proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      flags, seq, ack, l4 + doff, end, -1, n, window, l4)
    if proto == PROTO_UDP:
        if end - l4 < 8:
            return "truncated_udp"
        sport, dport = _PORTS.unpack_from(frame, l4)
        return Packet((proto, src, sport, dst, dport), proto, src, dst, sport, dport,
                      0, 0, 0, l4 + 8, end, -1, n)
    if proto == PROTO_ICMP:
        if end - l4 < 8:
            return "truncated_icmp"
        itype, _code, _c, ident = _ICMP_ECHO.unpack_from(frame, l4)
        key = _icmp_key(src, dst, itype, ident)
        return Packet(key, proto, src, dst, key[2], key[4], 0, 0, 0, l4 + 8, end, itype, n)
    return Packet((proto, src, 0, dst, 0), proto, src, dst, 0, 0, 0, 0, 0, l4, end, -1, n)


def quoted_key(frame: bytes, off: int, end: int) -> Key | None:
    """The key of the packet an ICMP error quotes (its IP header and at least 8 bytes
    from ``off``), as ``parse_ipv4`` keys that packet; None when too short or not IPv4."""
    if end - off < 20 or frame[off] >> 4 != 4:
        return None
    ihl = (frame[off] & 0x0F) * 4
    if ihl < 20 or end - off < ihl + 8:
        return None
    proto, src, dst = frame[off + 9], frame[off + 12:off + 16], frame[off + 16:off + 20]
    l4 = off + ihl
    if proto in (PROTO_TCP, PROTO_UDP):
        sport, dport = _PORTS.unpack_from(frame, l4)
        return (proto, src, sport, dst, dport)
    if proto == PROTO_ICMP:
        itype, _code, _c, ident = _ICMP_ECHO.unpack_from(frame, l4)
        return _icmp_key(src, dst, itype, ident)
    return (proto, src, 0, dst, 0)
