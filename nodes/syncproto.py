"""The sync protocol's wire format: the one place that defines it.

Every message is UDP on the sync network (port 3780, as conntrackd's FT-FW)::

    offset size field
         0    2 magic 0x4657 ("FW")
         2    1 version (2)
         3    1 type: 1 DATA (records, reliable), 2 ACK, 3 HEARTBEAT
         4    2 sender node id
         6    2 receiver node id (0: every node)
         8    8 sender incarnation (random at process start: a restart changes it)
        16    8 receiver incarnation, as the sender last heard it (0: not yet, or every node)
        24    4 seq: DATA sequence number on the sender->receiver channel (from 1); in
                HEARTBEAT, HOME_* and FORWARD a counter of the sender's incarnation
                that only grows (freshness: a replay repeats an old one)
        28    4 ack: highest seq received in order on the receiver->sender channel
        32    2 payload length
        34    2 reserved (0)
        36    n payload: records (DATA) or the member list (HEARTBEAT)
      36+n   16 HMAC-SHA256 of bytes 0..36+n under the cluster key, first 16 bytes

Freshness (nodes/sync/__init__.py): a message changes state or membership only
if it names the receiver's current incarnation (a message made for an earlier
incarnation of the receiver is stale), and an unsequenced message only if its
counter is above every counter the receiver has accepted from that incarnation
of its sender. A message that names another incarnation is a hello: it only
tells the receiver what incarnation to name in what it sends back.

A record is ``type (1) | length (2) | value``; all integers are big-endian:

    1 ENTRY      connection key 13 (proto 1, src 4, sport 2, dst 4, dport 2: the
                 key nodes/packet.py holds), state 1, owner 2,
                 timeout ms 4, flags 1 (1: FTP helper, 2: related, 4: TCP window,
                 8: TCP window scales), [master key 13], [window: for the original
                 then the reply direction end 4, maxend 4, maxwin 4, scale 1,
                 flags 1 (nodes/tcpwindow.py)], [scales: for each
                 direction scale 1, flags 1]
    2 ENTRY_DEL  connection key 13, owner 2
    3 EXPECT     proto 1, src 4 (0.0.0.0: any), dst 4, dport 2, owner 2,
                 timeout ms 4, master key 13
    4 EXPECT_DEL proto 1, src 4, dst 4, dport 2, owner 2
    5 COMMON     owner 2, name length 1, name, value length 2, value
                 (authentication or VPN parameters: state every node needs)
    6 BULK_REQUEST   (empty): send me what I must hold
    7 BULK_END   records 4: the bulk transfer that this ends carried so many
    8 BULK_START (empty): the answer to a BULK_REQUEST begins
    9-12         ENTRY, ENTRY_DEL, EXPECT, EXPECT_DEL of IPv6 connections: the same
                 fields with 16-byte addresses (a key, and a master key, is 37
                 bytes; an expectation's any source is ::)

Home-node forwarding (mode ``home``) uses three more message types, not
sequenced (a lost query is a dropped packet, as a lost packet would be). A
HOME_QUERY is sent once, by IP multicast, to group 239.255.37.80 port 3780
(receiver 0: every node); answers and forwarded packets are unicast:

    4 HOME_QUERY   query id 4, ingress 1 (0 outside, 1 inside), the packet (frame)
    5 HOME_ANSWER  query id 4, home node id 2, connection key 13 (IPv6: 37)
    6 FORWARD      ingress 1, the packet: process it as if it arrived on ingress

Kernel nodes (nodes/kernel/) add two, between the steering controller (id 0)
and a node's agent, freshness by the counter in ``seq`` (the controller's):

    7 COMMIT       (empty): commit conntrackd's external cache into the kernel
    8 COMMIT_DONE  status 1 (0: done), ``seq`` that of the COMMIT it answers

A node's death notice (nodes/shell/deathwatch.py): a process beside the node
in its host, which sees the node's process end (its end of a pipe closes)
and sends what the node sealed for it at start, to every peer and the
controller (receiver 0, receiver incarnation 0, counter 0):

    9 DEATH        (empty): the incarnation in ``boot`` is over

It needs no freshness counter: it is only ever true, and only ever sent,
once that incarnation has ended, and an incarnation never comes back (a
restart is a new one), so a copy replayed later tells nothing that is not
already so. It is acted on only for the incarnation the receiver knows
(nodes/failure.py, ``FailureDetector.died``).

A HEARTBEAT's payload is the sender's view of live members and its state:
count 1, ids 2 each, flags 1 (1: ready, it holds the state it must hold). The
steering controller hears heartbeats too (receiver 0), so nodes and controller
judge membership from the same messages.

A message that is short, has a bad magic, version, length or HMAC, comes from
an older boot of its sender, or is not addressed to this node is dropped and
counted by reason (``decode`` raises ``Reject``); it is never applied.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

MAGIC, VERSION, PORT = 0x4657, 4, 3780
WIRE_HEADERS = 14 + 20 + 8  # Ethernet, IPv4 and UDP around each message on the cluster network
GROUP = "239.255.37.80"  # the cluster's multicast group (administratively scoped, 239/8)
MULTICAST = -1  # the outbox's peer id for "every node, by multicast"
DATA, ACK, HEARTBEAT = 1, 2, 3
HOME_QUERY, HOME_ANSWER, FORWARD = 4, 5, 6  # home-node forwarding (the second seed)
COMMIT, COMMIT_DONE = 7, 8  # controller and kernel nodes: commit conntrackd's external cache
DEATH = 9  # a node's death notice, sent by the process that watches it
R_ENTRY, R_ENTRY_DEL, R_EXPECT, R_EXPECT_DEL, R_COMMON, R_BULK_REQUEST, R_BULK_END, \
    R_BULK_START = range(1, 9)
RECORD_NAMES = {R_ENTRY: "entry", R_ENTRY_DEL: "entry_del", R_EXPECT: "expect",
                R_EXPECT_DEL: "expect_del", R_COMMON: "common", R_BULK_REQUEST: "bulk_request",
                R_BULK_END: "bulk_end", R_BULK_START: "bulk_start"}
SENT = {t: f"sent_{n}" for t, n in RECORD_NAMES.items()}  # the counters of each type
RECEIVED = {t: f"received_{n}" for t, n in RECORD_NAMES.items()}
MAC_LEN = 16
HEADER = struct.Struct("!HBBHHQQIIHH")
HEADER_LEN = HEADER.size  # 36
MAX_PAYLOAD = 1400  # keeps a message inside one Ethernet frame
_REC = struct.Struct("!BH")
IPV6_RECORD = 8  # an IPv6 record's type on the wire: its IPv4 counterpart's plus this


class _Layout:
    """The structs of the records that carry addresses, for one address length."""

    def __init__(self, n: int):
        a, k = f"{n}s", f"{2 * n + 5}s"  # an address; a connection key, 13 or 37 bytes
        self.key = struct.Struct(k)
        self.entry = struct.Struct(f"!{k}BHIB")
        self.entry_record = struct.Struct(f"!BH{k}BHIB")  # type, length, then entry
        self.entry_del = struct.Struct(f"!{k}H")
        self.expect = struct.Struct(f"!B{a}{a}HHI")
        self.expect_del = struct.Struct(f"!B{a}{a}HH")
        self.any = bytes(n)  # an expectation's "any source"


_V4, _V6 = _Layout(4), _Layout(16)

# Connection states on the wire, by index.
STATES = ("SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
          "UNREPLIED", "REPLIED")
_STATE_INDEX = {s: i for i, s in enumerate(STATES)}
F_FTP, F_RELATED, F_WINDOW, F_SCALES = 1, 2, 4, 8
_WINDOW = struct.Struct("!IIIBBIIIBB")  # both directions' nodes.tcpwindow.Seen fields
_SCALES = struct.Struct("!BBBB")
# An IPv4 ENTRY's length without a master key or scales -> the flags it must carry
# (besides F_FTP): decode_records' short way.
_PLAIN = {_V4.entry.size: 0, _V4.entry.size + _WINDOW.size: F_WINDOW}


class Reject(ValueError):
    """A message that must not be applied; ``reason`` names why (for counters)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Message:
    """One decoded message."""

    type: int
    sender: int
    receiver: int
    boot: int
    seq: int = 0  # DATA: channel sequence; HEARTBEAT, HOME_*, FORWARD: freshness counter
    ack: int = 0
    records: list = field(default_factory=list)  # DATA: [(type, fields dict)]
    members: list = field(default_factory=list)  # HEARTBEAT
    ready: bool = True  # HEARTBEAT
    query: int = 0  # HOME_QUERY, HOME_ANSWER
    ingress: int = 0  # HOME_QUERY, FORWARD
    frame: bytes = b""  # HOME_QUERY, FORWARD
    home: int = 0  # HOME_ANSWER
    key: bytes = b""  # HOME_ANSWER: a connection key
    to_boot: int = 0  # the receiver's incarnation as the sender knows it (0: unknown / all)


def encode(msg: Message, key: bytes) -> bytes:
    """The bytes on the wire of ``msg``, authenticated under ``key``."""
    if msg.type == HEARTBEAT:
        payload = struct.pack(f"!B{len(msg.members)}HB", len(msg.members), *msg.members,
                              1 if msg.ready else 0)
    elif msg.type == HOME_QUERY:
        payload = struct.pack("!IB", msg.query, msg.ingress) + msg.frame
    elif msg.type == HOME_ANSWER:
        payload = struct.pack("!IH", msg.query, msg.home) + msg.key  # 13 or 37
    elif msg.type == FORWARD:
        payload = struct.pack("!B", msg.ingress) + msg.frame
    elif msg.type in (COMMIT, DEATH):
        payload = b""
    elif msg.type == COMMIT_DONE:
        payload = struct.pack("!B", msg.query)
    else:
        payload = b"".join(encode_record(t, f) for t, f in msg.records)
    return seal(msg.type, msg.sender, msg.receiver, msg.boot, msg.seq, msg.ack, payload, key,
                msg.to_boot)


def seal(mtype: int, sender: int, receiver: int, boot: int, seq: int, ack: int,
         payload: bytes, key: bytes, to_boot: int = 0) -> bytes:
    """Header, payload (records already encoded) and HMAC: one message."""
    if len(payload) > 0xFFFF:
        raise ValueError("payload too long for one message")
    body = HEADER.pack(MAGIC, VERSION, mtype, sender, receiver, boot, to_boot, seq, ack,
                       len(payload), 0)
    body += payload
    return body + hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN]


def decode(data: bytes, key: bytes) -> Message:
    """Parse and verify one message; raise Reject with a reason when it is bad."""
    if len(data) < HEADER_LEN + MAC_LEN:
        raise Reject("short")
    magic, version, mtype, sender, receiver, boot, to_boot, seq, ack, length, _ = \
        HEADER.unpack_from(data)
    if magic != MAGIC:
        raise Reject("bad_magic")
    if version != VERSION:
        raise Reject("bad_version")
    if HEADER_LEN + length + MAC_LEN != len(data):
        raise Reject("bad_length")
    body, mac = data[:-MAC_LEN], data[-MAC_LEN:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()[:MAC_LEN]):
        raise Reject("bad_mac")
    if mtype not in (DATA, ACK, HEARTBEAT, HOME_QUERY, HOME_ANSWER, FORWARD, COMMIT,
                     COMMIT_DONE, DEATH):
        raise Reject("bad_type")
    msg = Message(mtype, sender, receiver, boot, seq, ack, to_boot=to_boot)
    payload = body[HEADER_LEN:]
    try:
        if mtype == DATA:
            msg.records = decode_records(payload)
        elif mtype == HEARTBEAT:
            n = payload[0]
            if len(payload) != 2 + 2 * n:
                raise ValueError("member list length")
            msg.members = list(struct.unpack_from(f"!{n}H", payload, 1))
            msg.ready = bool(payload[-1] & 1)
        elif mtype == HOME_QUERY:
            msg.query, msg.ingress = struct.unpack_from("!IB", payload)
            msg.frame = payload[5:]
            if msg.ingress > 1:
                raise ValueError("ingress must be 0 (outside) or 1 (inside)")
        elif mtype == HOME_ANSWER:
            if len(payload) not in (6 + _V4.key.size, 6 + _V6.key.size):
                raise ValueError("HOME_ANSWER length")
            msg.query, msg.home = struct.unpack_from("!IH", payload)
            msg.key = key_from(payload, 6, len(payload) == 6 + _V6.key.size)
        elif mtype == FORWARD:
            msg.ingress = payload[0]
            msg.frame = payload[1:]
            if msg.ingress > 1:
                raise ValueError("ingress must be 0 (outside) or 1 (inside)")
        elif mtype in (COMMIT, DEATH):
            if payload:
                raise ValueError("COMMIT and DEATH carry nothing")
        elif mtype == COMMIT_DONE:
            (msg.query,) = struct.unpack("!B", payload)
    except (struct.error, IndexError, KeyError, ValueError) as err:
        raise Reject("bad_record") from err
    return msg


def key_from(data: bytes, off: int = 0, ipv6: bool = False) -> bytes:
    """The connection key (13 bytes, IPv6: 37) at ``off``."""
    size = (_V6 if ipv6 else _V4).key.size
    key = bytes(data[off:off + size])
    if len(key) != size:
        raise ValueError("key runs past the record")
    return key


def wire_type(rtype: int, f: dict) -> int:
    """A record's type on the wire: an IPv6 connection's or expectation's goes as
    ``rtype + IPV6_RECORD``."""
    if rtype in (R_ENTRY, R_ENTRY_DEL):
        return rtype + IPV6_RECORD * (len(f["key"]) == _V6.key.size)
    if rtype in (R_EXPECT, R_EXPECT_DEL):
        return rtype + IPV6_RECORD * (len(f["dst"]) == 16)
    return rtype


def encode_record(rtype: int, f: dict) -> bytes:
    """One record's bytes; ``f`` holds the fields the module docstring lists (an IPv6
    connection's or expectation's record goes as type + IPV6_RECORD)."""
    if rtype == R_ENTRY:
        return encode_entry(f["key"], f["state"], f["owner"], f["timeout"], f.get("helper"),
                            f.get("master"), f.get("window"), f.get("scales"))
    wire = wire_type(rtype, f)
    lay = _V6 if wire != rtype else _V4
    if rtype == R_ENTRY_DEL:
        value = lay.entry_del.pack(f["key"], f["owner"])
    elif rtype == R_EXPECT:
        value = lay.expect.pack(f["proto"], f["src"] or lay.any, f["dst"], f["dport"], f["owner"],
                                min(int(f["timeout"] * 1000), 0xFFFFFFFF)) + f["master"]
    elif rtype == R_EXPECT_DEL:
        value = lay.expect_del.pack(f["proto"], f["src"] or lay.any, f["dst"], f["dport"],
                                    f["owner"])
    elif rtype == R_COMMON:
        name, val = f["name"].encode(), f["value"]
        value = struct.pack("!HB", f["owner"], len(name)) + name + struct.pack("!H", len(val)) + val
    elif rtype in (R_BULK_REQUEST, R_BULK_START):
        value = b""
    elif rtype == R_BULK_END:
        value = struct.pack("!I", f["records"])
    else:
        raise ValueError(f"unknown record type {rtype}")
    return _REC.pack(wire, len(value)) + value


def encode_entry(key: bytes, state: str, owner: int, timeout: float, helper: str | None = None,
                 master: bytes | None = None, window: tuple | None = None,
                 scales: tuple | None = None) -> bytes:
    """An ENTRY record's bytes (the fields of ``encode_record``'s, positional: a bulk
    transfer makes a million of them)."""
    v6 = len(key) == 37
    lay = _V6 if v6 else _V4
    flags = F_FTP if helper == "ftp" else 0
    tail = b""  # what follows the fixed fields: packed with the header in one call
    if master:
        flags |= F_RELATED
        tail = master
    if window:
        flags |= F_WINDOW
        tail += _WINDOW.pack(*window)
    elif scales:
        flags |= F_SCALES
        tail += _SCALES.pack(*scales)
    ms = int(timeout * 1000)
    record = lay.entry_record.pack(R_ENTRY + IPV6_RECORD * v6, lay.entry.size + len(tail),
                                   key, _STATE_INDEX[state], owner,
                                   ms if ms < 0xFFFFFFFF else 0xFFFFFFFF, flags)
    return record + tail if tail else record


def decode_records(payload: bytes) -> list:
    """Every record of a DATA payload as (type, fields); an IPv6 record as the type of
    its IPv4 counterpart (its addresses are 16 bytes)."""
    out, off, end = [], 0, len(payload)
    while off < end:
        rtype, length = _REC.unpack_from(payload, off)
        off += _REC.size
        if rtype == R_ENTRY and length in _PLAIN and off + length <= end:
            # an IPv4 connection, with its window or without, nothing else: most records,
            # all of a bulk transfer's (decoded here, as _decode_record would, in half
            # its time)
            fields = _V4.entry.unpack_from(payload, off)
            flags = fields[4]
            if flags & ~F_FTP != _PLAIN[length]:
                raise ValueError("ENTRY length")
            f = {"key": fields[0], "state": STATES[fields[1]], "owner": fields[2],
                 "timeout": fields[3] / 1000, "helper": "ftp" if flags & F_FTP else None,
                 "master": None}
            if flags & F_WINDOW:
                f["window"] = _WINDOW.unpack_from(payload, off + _V4.entry.size)
            out.append((R_ENTRY, f))
            off += length
            continue
        value = payload[off:off + length]
        if len(value) != length:
            raise ValueError("record runs past the payload")
        off += length
        if R_ENTRY + IPV6_RECORD <= rtype <= R_EXPECT_DEL + IPV6_RECORD:
            rtype -= IPV6_RECORD
            out.append((rtype, _decode_record(rtype, value, _V6)))
        else:
            out.append((rtype, _decode_record(rtype, value, _V4)))
    return out


def _decode_record(rtype: int, v: bytes, lay: _Layout) -> dict:
    ipv6 = lay is _V6
    if rtype == R_ENTRY:
        key, state, owner, timeout, flags = lay.entry.unpack_from(v)
        off = lay.entry.size + (lay.key.size if flags & F_RELATED else 0)
        f = {"key": key, "state": STATES[state], "owner": owner,
             "timeout": timeout / 1000, "helper": "ftp" if flags & F_FTP else None,
             "master": key_from(v, lay.entry.size, ipv6) if flags & F_RELATED else None}
        if flags & F_WINDOW:
            f["window"] = _WINDOW.unpack_from(v, off)
            off += _WINDOW.size
        elif flags & F_SCALES:
            f["scales"] = _SCALES.unpack_from(v, off)
            off += _SCALES.size
        if len(v) != off or flags & ~(F_FTP | F_RELATED | F_WINDOW | F_SCALES):
            raise ValueError("ENTRY length")
        return f
    if rtype == R_ENTRY_DEL:
        key, owner = lay.entry_del.unpack(v)
        return {"key": key, "owner": owner}
    if rtype == R_EXPECT:
        proto, src, dst, dport, owner, timeout = lay.expect.unpack_from(v)
        if len(v) != lay.expect.size + lay.key.size:
            raise ValueError("EXPECT length")
        return {"proto": proto, "src": None if src == lay.any else src, "dst": dst,
                "dport": dport, "owner": owner, "timeout": timeout / 1000,
                "master": key_from(v, lay.expect.size, ipv6)}
    if rtype == R_EXPECT_DEL:
        proto, src, dst, dport, owner = lay.expect_del.unpack(v)
        return {"proto": proto, "src": None if src == lay.any else src, "dst": dst,
                "dport": dport, "owner": owner}
    if rtype == R_COMMON:
        owner, n = struct.unpack_from("!HB", v)
        name = v[3:3 + n].decode()
        (m,) = struct.unpack_from("!H", v, 3 + n)
        value = v[5 + n:5 + n + m]
        if len(value) != m or 5 + n + m != len(v):
            raise ValueError("COMMON length")
        return {"owner": owner, "name": name, "value": value}
    if rtype in (R_BULK_REQUEST, R_BULK_START):
        if v:
            raise ValueError("BULK_REQUEST and BULK_START carry nothing")
        return {}
    if rtype == R_BULK_END:
        return {"records": struct.unpack("!I", v)[0]}
    raise ValueError(f"unknown record type {rtype}")


def death_notice(sender: int, boot: int, key: bytes) -> bytes:
    """The DEATH message of incarnation ``boot`` of node ``sender``, for every receiver."""
    return encode(Message(DEATH, sender, 0, boot), key)
