"""IPv4 and IPv6 reassembly before the gateway engine judges a datagram (as Linux's
nf_defrag_ipv4 and nf_defrag_ipv6).

Pure: frames and times in, decisions out. A fragment is queued by its datagram
(IPv4: source, destination, protocol, identification; IPv6: source, destination,
identification, RFC 8200); when every byte from offset 0 to the last fragment's
end has arrived, the datagram is rebuilt for the engine to judge (IPv4: the first
fragment's Ethernet and IP headers, flags and offset cleared, length and checksum
set; IPv6: the first fragment's headers without its fragment header, the payload
length set), and the original fragments are handed back to be forwarded as they
came, as the bridge's netfilter does.

Bounds, after Linux's ``ipfrag_*`` settings: at most ``max_bytes`` of fragments
queued (``ipfrag_high_thresh``, 4 MiB; the oldest datagrams are evicted first),
``max_datagrams`` datagrams in progress, ``timeout`` seconds for a datagram to
complete (``ipfrag_time``, 30 s), 64 fragments a datagram and 65535 bytes. An
overlap drops the whole datagram (RFC 5722's rule for IPv6, which Linux applies
to IPv4 fragments that change what was already received too).
"""
from __future__ import annotations

import struct
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from nodes.packet import _IP, _fold, fragment_header6

MAX_BYTES = 4 << 20
MAX_DATAGRAMS = 1024
TIMEOUT = 30.0
MAX_FRAGMENTS = 64


@dataclass
class _Datagram:
    started: float
    parts: list = field(default_factory=list)  # (offset, payload, frame, ingress)
    size: int = 0  # bytes of frames queued
    received: int = 0  # payload bytes queued
    end: int | None = None  # the payload's length, once the last fragment came


@dataclass
class Done:
    """A complete datagram: the rebuilt frame to judge, and the fragments as they came."""

    frame: bytes
    fragments: list  # (frame, ingress)


class Reassembly:
    def __init__(self, max_bytes: int = MAX_BYTES, max_datagrams: int = MAX_DATAGRAMS,
                 timeout: float = TIMEOUT):
        self.max_bytes, self.max_datagrams, self.timeout = max_bytes, max_datagrams, timeout
        self.pending: OrderedDict[tuple, _Datagram] = OrderedDict()
        self.bytes = 0
        self.lost: Counter = Counter()  # queued fragments dropped with their datagram, by reason
        self.counters = {"fragments_queued": 0, "datagrams_reassembled": 0, "datagrams_timed_out": 0,
                         "datagrams_evicted": 0}

    def add(self, frame: bytes, ingress: int, now: float) -> Done | str | None:
        """Queue one fragment (an IPv4-in-Ethernet frame with MF or an offset, or an
        IPv6 one with a fragment header that is not atomic): None while its datagram
        is incomplete, Done once it is, or a drop reason (the datagram's fragments
        queued so far are dropped with it)."""
        self.expire(now)
        fields = _fields6(frame) if len(frame) > 14 and frame[14] >> 4 == 6 else _fields4(frame)
        if fields.__class__ is str:
            return fields
        key, offset, more, payload, limit = fields
        if more and (not payload or len(payload) % 8):
            return "frag_bad_length"  # every fragment but the last carries 8-byte units
        if offset + len(payload) > limit:
            return self._discard(key, "frag_too_big")
        dgram = self.pending.get(key)
        if dgram is None:
            if len(self.pending) >= self.max_datagrams:
                self._evict_oldest()
            dgram = self.pending[key] = _Datagram(now)
        for off, data, _, _ in dgram.parts:
            if offset < off + len(data) and off < offset + len(payload):
                if (off, data) == (offset, payload):
                    return "frag_duplicate"  # a retransmission: the queued copy goes out
                return self._discard(key, "frag_overlap")
        if not more:
            if dgram.end is not None and dgram.end != offset + len(payload):
                return self._discard(key, "frag_overlap")  # two different last fragments
            dgram.end = offset + len(payload)
        if len(dgram.parts) >= MAX_FRAGMENTS or (dgram.end is not None and
                                                offset + len(payload) > dgram.end):
            return self._discard(key, "frag_too_many" if len(dgram.parts) >= MAX_FRAGMENTS
                                 else "frag_overlap")
        dgram.parts.append((offset, payload, frame, ingress))
        dgram.size += len(frame)
        dgram.received += len(payload)
        self.bytes += len(frame)
        self.counters["fragments_queued"] += 1
        while self.bytes > self.max_bytes and self.pending:
            self._evict_oldest()
        if key not in self.pending:  # this very datagram was the oldest: counted in lost
            self.lost["frag_evicted"] -= 1
            return "frag_evicted"
        if dgram.end is None or dgram.received != dgram.end:  # no overlaps: bytes add up
            return None
        del self.pending[key]
        self.bytes -= dgram.size
        self.counters["datagrams_reassembled"] += 1
        return Done(self._rebuild(dgram), [(f, i) for _, _, f, i in dgram.parts])

    @staticmethod
    def _rebuild(dgram: _Datagram) -> bytes:
        parts = sorted(dgram.parts, key=lambda p: p[0])
        first = parts[0][2]
        payload = b"".join(p[1] for p in parts)
        if first[14] >> 4 == 6:  # the headers before the fragment header, which goes
            names, at, _ = fragment_header6(first)
            header = bytearray(first[14:at])
            header[names - 14] = first[at]  # its next header takes the fragment header's place
            struct.pack_into("!H", header, 4, len(header) - 40 + len(payload))
            return first[:14] + bytes(header) + payload
        ihl = (first[14] & 0x0F) * 4
        header = bytearray(first[14:14 + ihl])
        struct.pack_into("!H", header, 2, ihl + len(payload))
        struct.pack_into("!H", header, 6, 0)  # no flags, offset 0
        struct.pack_into("!H", header, 10, 0)
        # _fold sums in the machine's byte order: its complement goes back in the same
        header[10:12] = (~_fold(bytes(header)) & 0xFFFF).to_bytes(2, sys.byteorder)
        return first[:14] + bytes(header) + payload

    def _discard(self, key: tuple, reason: str) -> str:
        dgram = self.pending.pop(key, None)
        if dgram is not None:
            self.bytes -= dgram.size
            self.lost[reason] += len(dgram.parts)
        return reason

    def _evict_oldest(self) -> None:
        _, dgram = self.pending.popitem(last=False)
        self.bytes -= dgram.size
        self.lost["frag_evicted"] += len(dgram.parts)
        self.counters["datagrams_evicted"] += 1

    def queued(self) -> int:
        """Fragments waiting for their datagram now."""
        return sum(len(d.parts) for d in self.pending.values())

    def expire(self, now: float) -> None:
        """Drop the datagrams that did not complete within ``timeout``."""
        while self.pending:
            key, dgram = next(iter(self.pending.items()))
            if now - dgram.started < self.timeout:
                return
            del self.pending[key]
            self.bytes -= dgram.size
            self.lost["frag_timeout"] += len(dgram.parts)
            self.counters["datagrams_timed_out"] += 1


def _fields4(frame: bytes) -> tuple | str:
    """An IPv4 fragment's datagram key, offset, more-fragments flag, payload and the
    largest offset + length its datagram may reach; or a drop reason."""
    if len(frame) < 34:
        return "truncated_ip"
    vihl, _tos, total, ident, frag, _ttl, proto, _csum, src, dst = _IP.unpack_from(frame, 14)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or total < ihl or 14 + total > len(frame):
        return "truncated_ip"
    return ((src, dst, proto, ident), (frag & 0x1FFF) * 8, bool(frag & 0x2000),
            frame[14 + ihl:14 + total], 65535 - ihl)


def _fields6(frame: bytes) -> tuple | str:
    """The same of an IPv6 fragment (its headers before the fragment header count
    against the 65535 bytes of payload length)."""
    found = fragment_header6(frame)
    if found.__class__ is str:
        return found
    _, at, end = found
    offset_flags = int.from_bytes(frame[at + 2:at + 4], "big")
    return ((frame[22:38], frame[38:54], frame[at + 4:at + 8]), offset_flags & 0xFFF8,
            bool(offset_flags & 1), frame[at + 8:end], 65535 - (at + 8 - 54))
