"""The reliable channel between two nodes (after conntrackd's FT-FW).

Per peer, both directions: DATA messages carry sequence numbers from 1;
every message carries a cumulative acknowledgement of what arrived in order;
an unacknowledged message is sent again after ``rto``; a receiver buffers up
to ``window`` messages that arrive early and applies records strictly in
order; duplicates and replays within a boot are dropped. Pure: it packs and
unpacks, the sync engine counts and sends.

Bounds: at most ``MAX_UNACKED`` messages wait for their acknowledgement (more
records wait unpacked, at most ``max_pending``, which the sync engine sizes to
what its table can hold, ``pending_cap``; beyond that the oldest is dropped and
counted); a message's timer doubles with each resend up to
``BACKOFF`` times the rto; one tick resends at most ``RESEND_BUDGET`` messages;
one pack takes at most ``PACK_BUDGET`` records (the rest next round), so that a
failover's or a bulk answer's thousands of records do not keep a node from its
heartbeats past ``dead_after``.

Two lanes: ``urgent`` records (what protocol code asked to have sent now, while
a packet waits for it: method 800's hold) are packed before ``pending`` ones,
all of them at once, past ``MAX_UNACKED`` too, so a held packet waits for the
messages already in flight and never for a backlog (a bulk answer of a million
records) still unpacked. Their number is bounded by what can be held (one per
connection, and expectations are capped), not here. ``MAX_UNACKED`` is then
also what a held packet may wait behind: 128 messages are about 5k records, some
20 ms of a peer's work, under the 50 ms ``hold_timeout``; at 1024 a hold during
a bulk transfer waited behind 40k records and timed out.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from itertools import chain

from nodes import syncproto as sp

MAX_UNACKED = 128  # messages of the pending lane sent and not yet acknowledged, per peer
MAX_PENDING = 200_000  # records waiting to be packed, per peer, beyond the table's bursts
BACKOFF = 8  # a message is resent after rto, 2 rto, 4 rto, then every 8 rto
RESEND_BUDGET = 64  # messages resent to one peer in one tick at most
LATER = None  # a pending record made from its object when packed (see pack)
PACK_BUDGET = 1024  # records packed for one peer in one round at most (~10 ms)
REPLAY_WINDOW = 1024  # freshness counters below the highest that may still come, once
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


def pending_cap(max_entries: int, max_expectations: int) -> int:
    """Records that may wait for one peer: a bulk answer and a regroup at once (a peer
    taken for dead comes back: every entry of mine twice, peer_joined), each as large
    as the table can be, and MAX_PENDING more for the changes meanwhile. A smaller cap
    dropped the start of a bulk answer from a node owning more than 200k entries, and
    the newcomer took itself for ready without them."""
    return 2 * (max_entries + max_expectations) + MAX_PENDING


@dataclass
class Sent:
    """A DATA message kept until the peer acknowledges it."""

    data: bytes
    last_sent: float
    records: int
    queued: float  # when the oldest of its records was queued (its state changed)
    tries: int = 0  # resends so far

    def due_at(self, rto: float) -> float:
        return self.last_sent + rto * min(BACKOFF, 1 << self.tries)


@dataclass
class Channel:
    """Both directions of the reliable channel with one peer."""

    next_seq: int = 1  # to send
    acked: int = 0  # highest seq the peer acknowledged
    unacked: OrderedDict = field(default_factory=OrderedDict)  # seq -> Sent
    expected: int = 1  # next seq wanted from the peer
    early: dict = field(default_factory=dict)  # seq -> records, received out of order
    peer_boot: int = 0  # the peer's incarnation, confirmed by a fresh message
    hello_boot: int = 0  # the incarnation a hello named, before any fresh message
    counter: int = 0  # highest freshness counter accepted from peer_boot
    seen: int = 0  # bit i: counter - i was accepted (the anti-replay window)
    first: int = 0  # the counter of the first fresh unicast unsequenced message (0: none yet)
    past: set = field(default_factory=set)  # the peer's earlier incarnations
    ack_due: bool = False
    pending: deque = field(default_factory=deque)  # records waiting to be packed (a
    # queue: a bulk transfer's million leave from its head a thousand at a time)
    urgent: deque = field(default_factory=deque)  # records packed before pending ones
    resend_at: float = float("inf")  # no unacknowledged message is due before this
    overflow: int = 0  # records dropped because max_pending were waiting
    max_pending: int = MAX_PENDING  # set by the sync engine (pending_cap)

    # -- sending -------------------------------------------------------------
    def fresh(self, counter: int) -> bool:
        """Accept an unsequenced message's counter once, within a window of REPLAY_WINDOW
        (RFC 4303's anti-replay window): messages come on two sockets (unicast and
        multicast), so a later one may be read first."""
        if counter > self.counter:
            self.seen = ((self.seen << (counter - self.counter)) | 1) & _WINDOW_MASK
            self.counter = counter
            return True
        back = self.counter - counter
        if back >= REPLAY_WINDOW or (self.seen >> back) & 1:
            return False
        self.seen |= 1 << back
        return True

    @property
    def to_boot(self) -> int:
        """The peer's incarnation to name in what is sent to it (0: not known yet)."""
        return self.peer_boot or self.hello_boot

    def pack(self, me: int, peer: int, boot: int, key: bytes, now: float, rto: float,
             budget: int | None = PACK_BUDGET,
             resolve=None) -> list[tuple[int, bytes, list[int]]]:
        """Urgent records, all of them, then pending ones, up to ``budget`` (None: all),
        in as few DATA messages as fit: (seq, bytes, record types). A ``(LATER, (kind,
        obj, queued_at))`` is made a record only now, by ``resolve(kind, obj, now)`` (its
        type and bytes): it carries the state as it is when it leaves, and queueing
        thousands of them (a failover) costs little. Each message keeps when its oldest
        record was queued (``Sent.queued``)."""
        out: list[tuple[int, bytes, list[int]]] = []
        chunks, size, kinds, oldest = [], 0, [], now
        used, urgent = 0, len(self.urgent)
        records = chain(self.urgent, self.pending) if urgent else self.pending
        for rtype, fields in records:
            if budget is not None and used >= budget + urgent:
                break
            if rtype is LATER:
                kind, obj, at = fields
                rtype, rec = resolve(kind, obj, now)
            else:
                at, rec = now, sp.encode_record(rtype, fields)
            if chunks and size + len(rec) > sp.MAX_PAYLOAD:
                out.append(self._seal(me, peer, boot, key, b"".join(chunks), kinds, now, rto,
                                      oldest))
                chunks, size, kinds, oldest = [], 0, [], now
            if not chunks and len(self.unacked) >= MAX_UNACKED and used >= urgent:
                break  # the peer is behind: the rest waits for its acknowledgements
            chunks.append(rec)
            kinds.append(rtype)
            size += len(rec)
            oldest = min(oldest, at)
            used += 1
        if chunks:
            out.append(self._seal(me, peer, boot, key, b"".join(chunks), kinds, now, rto, oldest))
        self.urgent.clear()
        pending = self.pending
        for _ in range(used - urgent):
            pending.popleft()
        if len(pending) > self.max_pending:
            self.overflow += len(pending) - self.max_pending
            for _ in range(len(pending) - self.max_pending):
                pending.popleft()
        return out

    def _seal(self, me, peer, boot, key, payload, kinds, now, rto, queued):
        seq = self.next_seq
        self.next_seq += 1
        data = sp.seal(sp.DATA, me, peer, boot, seq, self.expected - 1, payload, key,
                       self.peer_boot)
        self.unacked[seq] = Sent(data, now, len(kinds), queued)
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
            if len(out) < RESEND_BUDGET and now >= sent.due_at(rto):
                sent.last_sent = now
                sent.tries += 1
                out.append(sent.data)
            self.resend_at = min(self.resend_at, sent.due_at(rto))
        return out

    @property
    def idle(self) -> bool:
        """Nothing to send, to resend or to acknowledge."""
        return not (self.unacked or self.pending or self.urgent or self.ack_due)

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
