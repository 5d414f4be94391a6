"""The kernel's NFLOG messages (nfnetlink_log), built and read without a library.

A kernel node's ruleset sends every drop to a chain that logs it to NFLOG group
GROUP (at most LOG_RATE a second, in the kernel) before it counts and drops it;
the agent reads the group and writes the drops to the node's event log, as the
Python node does. Pure: bytes in, bytes or dicts out; the socket is the agent's.
"""
from __future__ import annotations

import struct

from nodes.packet import key_fields, quoted_key

GROUP = 1
LOG_RATE = 1000  # logged drops a second at most (the Python node's drop-event rate)
COPY_RANGE = 96  # bytes of each dropped packet copied to userspace: its headers

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFULA_CFG_CMD, NFULA_CFG_MODE = 1, 2
NFULNL_CFG_CMD_BIND = 1
NFULNL_COPY_PACKET = 2
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")  # family, version, res_id (the group)
_NLA = struct.Struct("=HH")


def _attr(kind: int, data: bytes) -> bytes:
    raw = _NLA.pack(_NLA.size + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _message(msg_type: int, group: int, attrs: bytes, seq: int) -> bytes:
    body = _NFGEN.pack(0, 0, group) + attrs  # family AF_UNSPEC, version 0
    return _NLMSG.pack(_NLMSG.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, seq,
                       0) + body


def bind_messages(group: int = GROUP, copy_range: int = COPY_RANGE) -> list[bytes]:
    """Bind ``group`` and ask for the first ``copy_range`` bytes of each packet."""
    config = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return [_message(config, group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), 1),
            _message(config, group, _attr(NFULA_CFG_MODE, struct.pack(
                "!IBB", copy_range, NFULNL_COPY_PACKET, 0)), 2)]


def errors(data: bytes) -> list[int]:
    """The error codes of the netlink acknowledgements in ``data`` (0: success)."""
    return [struct.unpack_from("=i", data, off + _NLMSG.size)[0]
            for off, msg_type, _ in _messages(data) if msg_type == NLMSG_ERROR]


def _messages(data: bytes):
    off = 0
    while off + _NLMSG.size <= len(data):
        length, msg_type = _NLMSG.unpack_from(data, off)[:2]
        if length < _NLMSG.size:
            return
        yield off, msg_type, data[off + _NLMSG.size:off + length]
        off += (length + 3) & ~3


def packets(data: bytes) -> list[tuple[str, bytes]]:
    """(prefix, IP packet head) of every NFLOG packet message in one datagram."""
    out = []
    for _, msg_type, body in _messages(data):
        if msg_type != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            continue
        attrs, off = {}, _NFGEN.size
        while off + _NLA.size <= len(body):
            length, kind = _NLA.unpack_from(body, off)
            if length < _NLA.size:
                break
            attrs[kind & 0x3FFF] = body[off + _NLA.size:off + length]
            off += (length + 3) & ~3
        prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("ascii", "replace")
        out.append((prefix, attrs.get(NFULA_PAYLOAD, b"")))
    return out


def ip_tuple(packet: bytes) -> dict | None:
    """The 5-tuple fields of an IPv4 or IPv6 packet, shaped as nodes.packet.key_fields
    and keyed as the Python node keys it (nodes/packet.py parses it: ICMP's and ICMPv6's
    echo identifier in the port of its direction); None when it does not parse. NFLOG
    copies only the packet's head, so it is read as an ICMP error's quote is: the IP
    header and the first 8 bytes after it are enough."""
    version = packet[0] >> 4 if packet else 0
    key = quoted_key(packet, 0, len(packet), version) if version in (4, 6) else None
    return key_fields(key) if key else None
