"""The reliable channel between two nodes (after conntrackd's FT-FW).

Per peer, both directions: DATA messages carry sequence numbers from 1;
every message carries a cumulative acknowledgement of what arrived in order;
an unacknowledged message is sent again after ``rto``; a receiver buffers up
to ``window`` messages that arrive early and applies records strictly in
order; duplicates and replays within a boot are dropped. Pure: it packs and
unpacks, the sync engine counts and sends.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from nodes import syncproto as sp


@dataclass
class Sent:
    """A DATA message kept until the peer acknowledges it."""

    data: bytes
    last_sent: float
    records: int


@dataclass
class Channel:
    """Both directions of the reliable channel with one peer."""

    next_seq: int = 1  # to send
    acked: int = 0  # highest seq the peer acknowledged
    unacked: OrderedDict = field(default_factory=OrderedDict)  # seq -> Sent
    expected: int = 1  # next seq wanted from the peer
    early: dict = field(default_factory=dict)  # seq -> records, received out of order
    peer_boot: int = 0
    ack_due: bool = False
    pending: list = field(default_factory=list)  # records waiting to be packed
    resend_at: float = float("inf")  # no unacknowledged message is due before this

    # -- sending -------------------------------------------------------------
    def pack(self, me: int, peer: int, boot: int, key: bytes, now: float,
             rto: float) -> list[tuple[int, bytes, list[int]]]:
        """Every pending record in as few DATA messages as fit: (seq, bytes, record types)."""
        out: list[tuple[int, bytes, list[int]]] = []
        chunks, size, kinds = [], 0, []
        for rtype, fields in self.pending:
            rec = sp.encode_record(rtype, fields)
            if chunks and size + len(rec) > sp.MAX_PAYLOAD:
                out.append(self._seal(me, peer, boot, key, b"".join(chunks), kinds, now, rto))
                chunks, size, kinds = [], 0, []
            chunks.append(rec)
            kinds.append(rtype)
            size += len(rec)
        if chunks:
            out.append(self._seal(me, peer, boot, key, b"".join(chunks), kinds, now, rto))
        self.pending.clear()
        return out

    def _seal(self, me, peer, boot, key, payload, kinds, now, rto):
        seq = self.next_seq
        self.next_seq += 1
        data = sp.seal(sp.DATA, me, peer, boot, seq, self.expected - 1, payload, key)
        self.unacked[seq] = Sent(data, now, len(kinds))
        self.resend_at = min(self.resend_at, now + rto)
        self.ack_due = False  # the ack rides along
        return seq, data, kinds

    def due(self, now: float, rto: float) -> list[bytes]:
        """Unacknowledged messages whose retransmission timer ran out (marked as sent now)."""
        if now < self.resend_at:
            return []  # nothing due: no scan of the resend queue
        self.resend_at = float("inf")
        out = []
        for sent in self.unacked.values():
            if now - sent.last_sent >= rto:
                sent.last_sent = now
                out.append(sent.data)
            self.resend_at = min(self.resend_at, sent.last_sent + rto)
        return out

    @property
    def idle(self) -> bool:
        """Nothing to send, to resend or to acknowledge."""
        return not (self.unacked or self.pending or self.ack_due)

    # -- receiving -----------------------------------------------------------
    def acknowledge(self, ack: int) -> list[int] | str:
        """The peer acknowledged up to ``ack``: the seqs now done, or a reject reason."""
        if ack <= self.acked:
            return []
        if ack >= self.next_seq:
            return "ack_beyond_sent"
        self.acked = ack
        done = []
        while self.unacked and next(iter(self.unacked)) <= ack:
            seq, _ = self.unacked.popitem(last=False)
            done.append(seq)
        return done

    def accept(self, seq: int, records: list, window: int) -> tuple[str | None, list]:
        """A DATA message arrived: (reject reason or None, records now in order).

        A message ahead of the next expected one waits (out of order) until
        the gap is filled; what it unblocks comes back at once, in order."""
        self.ack_due = True
        if seq < self.expected or seq in self.early:
            return "duplicate", []
        if seq >= self.expected + window:
            return "outside_window", []
        self.early[seq] = records
        ready = []
        while self.expected in self.early:
            ready.extend(self.early.pop(self.expected))
            self.expected += 1
        return None, ready
