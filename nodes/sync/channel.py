"""The reliable channel between two nodes (after conntrackd's FT-FW).

Per peer, both directions: DATA messages carry sequence numbers from 1;
every message carries a cumulative acknowledgement of what arrived in order;
an unacknowledged message is sent again after ``rto``; a receiver buffers up
to ``window`` messages that arrive early and applies records strictly in
order; duplicates and replays within a boot are dropped. Pure: it packs and
unpacks, the sync engine counts and sends.

The retransmission timer follows the round trip measured from acknowledgements
(RFC 6298's SRTT and RTTVAR, samples only from messages sent once: Karn, and
a timeout doubles the timer of what is sent next until a sample comes): the
smoothed round trip plus the configured ``rto`` (or 4 RTTVAR, if more) as the
margin by which a message may be late before it is taken for lost, at most
``MAX_RTO``. A peer busy applying a bulk answer acknowledges tens of
milliseconds after a message left, and a fixed 20 ms timer resent everything
in flight, again and again (7777 resends to a node restarted beside 200k
connections), until the duplicates buried its heartbeats.

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
also what a held packet may wait behind. 32 messages (about 1.8k records of a
bulk answer) are what a peer applies in two of its reading rounds, enough to
keep it busy: between two node processes (BENCH=sync_hold_during_bulk, 200k
connections) a hold during the bulk answer took 15 ms at the median and the
transfer 1.8-2.0 s; 16 halved the hold and slowed the transfer by a tenth; at
128 nearly every hold ran into the 50 ms ``hold_timeout``, and at 1024 a hold
waited behind 40k records.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from nodes import syncproto as sp

MAX_UNACKED = 32  # messages of the pending lane sent and not yet acknowledged, per peer
MAX_PENDING = 200_000  # records waiting to be packed, per peer, beyond the table's bursts
BACKOFF = 8  # a message is resent after rto, 2 rto, 4 rto, then every 8 rto
MAX_RTO = 0.5  # seconds: the measured round trip never stretches the timer beyond this
RESEND_BUDGET = 64  # messages resent to one peer in one tick at most
LATER = None  # a pending record made from its object when packed (see pack)
MANY = -1  # a run of them (see pack): a bulk answer queued in one step
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
    timer: float = 0.0  # its channel's rto when it left, backed off (Channel.backoff)

    def due_at(self, rto: float) -> float:
        """When it is resent next: its timer, doubled with each resend, at most BACKOFF
        times the channel's rto (a timer backed off when it left does not back off
        twice: under 10% loss that stretched a resend to seconds)."""
        return self.last_sent + min(BACKOFF * rto,
                                    max(rto, self.timer) * (1 << min(self.tries, 16)))


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
    srtt: float = 0.0  # smoothed round trip, seconds (0: no sample yet)
    rttvar: float = 0.0  # its mean deviation
    backoff: int = 1  # doubled by a timeout, back to 1 by a sample (RFC 6298, 5.5 and 5.7)
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

    def rto(self, margin: float) -> float:
        """The retransmission timeout: the smoothed round trip plus ``margin`` (the
        configured rto) or 4 RTTVAR, whichever is more (RFC 6298, with ``margin`` as
        its clock granularity G); ``margin`` alone before any sample; MAX_RTO at most."""
        if not self.srtt:
            return margin
        return min(MAX_RTO, self.srtt + max(margin, 4 * self.rttvar))

    def _sample(self, rtt: float) -> None:
        self.backoff = 1
        if not self.srtt:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

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
        thousands of them (a failover) costs little. A ``(MANY, [kind, objs,
        queued_at, next])`` is a run of them (a bulk answer), taken from ``next`` on.
        Each message keeps when its oldest record was queued (``Sent.queued``)."""
        out: list[tuple[int, bytes, list[int]]] = []
        chunks, size, kinds, oldest = [], 0, [], now
        used = 0  # records of the pending lane taken
        for lane, limited in ((self.urgent, False), (self.pending, True)):
            while lane:
                if limited and budget is not None and used >= budget:
                    break
                rtype, fields = head = lane[0]
                if rtype is MANY:  # a run: packed here, record after record
                    kind, objs, at, start = fields
                    i, end = start, len(objs)
                    if limited and budget is not None:
                        end = min(end, start + budget - used)
                    while i < end:
                        rtype, rec = resolve(kind, objs[i], now)
                        if chunks and size + len(rec) > sp.MAX_PAYLOAD:
                            out.append(self._seal(me, peer, boot, key, b"".join(chunks), kinds,
                                                  now, rto, oldest))
                            chunks, size, kinds, oldest = [], 0, [], now
                        if not chunks and limited and len(self.unacked) >= MAX_UNACKED:
                            break
                        chunks.append(rec)
                        kinds.append(rtype)
                        size += len(rec)
                        i += 1
                        if at < oldest:
                            oldest = at
                    fields[3] = i
                    used += (i - start) * limited
                    if i < len(objs):
                        break  # the budget is spent, or the peer is behind
                    lane.popleft()
                    continue
                if rtype is LATER:
                    kind, obj, at = fields
                    rtype, rec = resolve(kind, obj, now)
                else:
                    at, rec = now, sp.encode_record(rtype, fields)
                if chunks and size + len(rec) > sp.MAX_PAYLOAD:
                    out.append(self._seal(me, peer, boot, key, b"".join(chunks), kinds, now,
                                          rto, oldest))
                    chunks, size, kinds, oldest = [], 0, [], now
                if not chunks and limited and len(self.unacked) >= MAX_UNACKED:
                    break  # the peer is behind: the rest waits for its acknowledgements
                chunks.append(rec)
                kinds.append(rtype)
                size += len(rec)
                if at < oldest:
                    oldest = at
                lane.popleft()
                used += limited
        if chunks:
            out.append(self._seal(me, peer, boot, key, b"".join(chunks), kinds, now, rto, oldest))
        pending = self.pending
        while len(pending) > self.max_pending:  # a run is one item, of many records
            rtype, fields = pending.popleft()
            self.overflow += len(fields[1]) - fields[3] if rtype is MANY else 1
        return out

    def _seal(self, me, peer, boot, key, payload, kinds, now, rto, queued):
        seq = self.next_seq
        self.next_seq += 1
        data = sp.seal(sp.DATA, me, peer, boot, seq, self.expected - 1, payload, key,
                       self.peer_boot)
        timer = min(MAX_RTO, self.rto(rto) * self.backoff)
        self.unacked[seq] = Sent(data, now, len(kinds), queued, timer=timer)
        self.resend_at = min(self.resend_at, now + timer)
        self.ack_due = False  # the ack rides along
        return seq, data, kinds

    def due(self, now: float, rto: float) -> list[bytes]:
        """Unacknowledged messages whose retransmission timer ran out (marked as sent
        now); ``rto``: the configured one, the floor of the measured one."""
        if now < self.resend_at:
            return []  # nothing due: no scan of the resend queue
        self.resend_at = float("inf")
        rto = self.rto(rto)
        out = []
        for sent in self.unacked.values():
            if len(out) < RESEND_BUDGET and now >= sent.due_at(rto):
                sent.last_sent = now
                sent.tries += 1
                out.append(sent.data)
            self.resend_at = min(self.resend_at, sent.due_at(rto))
        if out:  # what leaves from now on waits longer, until a round trip is measured
            self.backoff = min(BACKOFF, self.backoff * 2)
        return out

    @property
    def idle(self) -> bool:
        """Nothing to send, to resend or to acknowledge."""
        return not (self.unacked or self.pending or self.urgent or self.ack_due)

    # -- receiving -----------------------------------------------------------
    def acknowledge(self, ack: int, now: float | None = None) -> list[int] | str:
        """The peer acknowledged up to ``ack`` (at ``now``: a round-trip sample from the
        newest message it covers, if none it covers was resent): the seqs now done, or
        a reject reason.

        Karn's rule, for cumulative acknowledgements: an ack that also covers a resent
        message may have waited for that resend (the peer acknowledges in order), so it
        times nothing. Timed, each loss added the rto to the round trip, the rto grew
        to MAX_RTO, and resends came seconds apart (10% loss: rto 0.5 s)."""
        if ack <= self.acked:
            return []
        if ack >= self.next_seq:
            return "ack_beyond_sent"
        self.acked = ack
        done, newest, resent = [], None, False
        while self.unacked and next(iter(self.unacked)) <= ack:
            seq, newest = self.unacked.popitem(last=False)
            done.append(seq)
            resent = resent or newest.tries > 0
        if now is not None and newest is not None and not resent:
            self._sample(now - newest.last_sent)
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
