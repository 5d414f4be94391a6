"""The connection data structure (the seed's Figure 3) with TCP tracking.

Each entry holds both directions' keys, the protocol state, timestamps,
counters, the owning node and room for the seed's additional information
(NAT details, keys, routing, protocol-specific code and its state).
Expectations admit one announced related connection, once.
Pure: time comes in as ``now`` (seconds, any monotonic origin).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nodes.packet import (PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST,
                          TCP_SYN, Key, ip_str, key_fields, key_str, reverse)

# TCP states, named as conntrack names them.
ETH_HEADER = 14  # bytes before the IP header in every frame a node counts
SYN_SENT, SYN_RECV, ESTABLISHED = "SYN_SENT", "SYN_RECV", "ESTABLISHED"
FIN_WAIT, LAST_ACK, TIME_WAIT, CLOSE = "FIN_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE"
TCP_STATES = (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, LAST_ACK, TIME_WAIT, CLOSE)
# Pseudo-states of UDP and ICMP echo.
UNREPLIED, REPLIED = "UNREPLIED", "REPLIED"

ORIGINAL, REPLY = 0, 1
# The node's expiry sweep looks at a slice of the table each housekeeping round, as
# Linux's conntrack gc worker does: a whole table each round up to SWEEP_SLICE entries,
# beyond that a pass over the table in SWEEP_ROUNDS rounds (10 s at the node's 0.5 s).
# Walking a table of 1M entries at once took 41 ms in process, more in a loaded node,
# every 0.5 s, and halved its small-packet rate (make bench BENCH=scaling). Packets
# never meet an entry past its timeout (the engine looks at the time on lookup); the
# delay only keeps such an entry counted, and its destroy unsaid, until its turn.
SWEEP_SLICE = 20_000
SWEEP_ROUNDS = 20
EVICTION_RANGE = 64  # unassured entries early drop looks at, oldest first


@dataclass(frozen=True)
class Timeouts:
    """Idle timeouts in seconds, per state (defaults after Linux conntrack)."""

    syn_sent: float = 120.0
    syn_recv: float = 60.0
    established: float = 432000.0
    fin_wait: float = 120.0
    last_ack: float = 30.0
    time_wait: float = 120.0
    close: float = 10.0
    udp_unreplied: float = 30.0
    udp_replied: float = 120.0
    icmp: float = 30.0
    expectation: float = 300.0

    def __post_init__(self):
        by_state = {(PROTO_TCP, s): getattr(self, s.lower()) for s in TCP_STATES}
        by_state[PROTO_UDP, UNREPLIED] = self.udp_unreplied
        by_state[PROTO_UDP, REPLIED] = self.udp_replied
        object.__setattr__(self, "by_state", by_state)  # (proto, state) -> seconds

    def for_state(self, proto: int, state: str) -> float:
        """The idle timeout of an entry in ``state`` (ICMP echo: ``icmp``)."""
        return self.by_state.get((proto, state), self.icmp)


@dataclass(eq=False, slots=True)
class More:
    """What few connections have, apart from their entries (made when one of it is
    first set): the seed's additional information (``extra``: NAT, keys, routing), the
    protocol helper's state, the master of a related connection, the expectations it
    announced, and whether a packet of it was handled here while another node owned it.
    In the entry, one slot: with these five slots in each entry (and a time of its last
    packet), a table of established connections held 338 bytes an entry with its key;
    298 without."""

    related_to: Key | None = None  # the master connection of a related one
    helper_state: object = None
    expectations: list | None = None  # made when the first one is announced
    extra: dict | None = None  # NAT, keys, routing: the seed's additional information 33
    seen_here: bool = False  # a packet of another node's connection was handled here


_NONE = More()  # what an entry without More reads


def _more(name: str) -> property:
    """An entry's ``name`` kept in its More (read as More's default when it has none)."""
    def get(entry):
        more = entry.more
        return getattr(_NONE if more is None else more, name)

    def set_(entry, value):
        if entry.more is None:
            if value == getattr(_NONE, name):
                return  # nothing to keep
            entry.more = More()
        setattr(entry.more, name, value)
    return property(get, set_, doc=f"More.{name}")


@dataclass(eq=False, slots=True)
class Entry:
    """One connection: both directions, state, times, counters, owner. Linux keeps no
    time of the last packet either: an entry's ``expires`` is its idle timeout from
    then."""

    orig: Key
    state: str
    created: float
    expires: float
    owner: str
    rule: int = 0  # line of the accepting rule; 0 when admitted by an expectation
    helper: str | None = None
    packets_orig: int = 0
    packets_reply: int = 0
    bytes_orig: int = 0
    bytes_reply: int = 0
    fin_seen: int = 0  # bit 1 << direction for each direction that sent FIN
    replicated_at_bytes: int = -1  # bytes carried when a replica first left (-1: none yet)
    changed: float = 0.0  # when its state last changed (what a backup must have seen)
    window: list | None = None  # TCP: both directions' nodes.tcpwindow.Seen (None: untracked)
    fast: int = 0  # on the kernel's fast path: 0 no, 1 waiting for replication, 2 yes
    more: More | None = None  # what few connections have (More)

    related_to = _more("related_to")
    helper_state = _more("helper_state")
    expectations = _more("expectations")
    extra = _more("extra")
    seen_here = _more("seen_here")

    @property
    def reply(self) -> Key:
        return reverse(self.orig)

    @property
    def packets(self) -> list:
        return [self.packets_orig, self.packets_reply]

    @property
    def bytes(self) -> list:
        return [self.bytes_orig, self.bytes_reply]

    @property
    def proto(self) -> int:
        return self.orig[0]

    def as_dict(self, now: float) -> dict:
        """A JSON-ready view, as the inspection command shows it."""
        return {
            "proto": self.proto, "state": self.state, "owner": self.owner,
            "orig": key_str(self.orig), "reply": key_str(self.reply),
            "tuple": key_fields(self.orig),
            "timeout": round(max(0.0, self.expires - now), 1),
            "age": round(now - self.created, 3),
            "unchanged": round(now - self.changed, 3),
            "packets": list(self.packets), "bytes": list(self.bytes),
            # IP bytes, as conntrack counts them: the frames less their Ethernet headers
            "l3_bytes": [b - ETH_HEADER * n for b, n in zip(self.bytes, self.packets)],
            "assured": assured(self),
            "rule": self.rule, "helper": self.helper,
            "related_to": key_str(self.related_to) if self.related_to else None,
            "extra": dict(self.extra or {}),
        }


@dataclass(eq=False)
class Expectation:
    """A related connection announced on a master connection, admitted once."""

    proto: int
    src: bytes | None  # None: any source address
    dst: bytes
    dport: int
    master: Key
    created: float
    expires: float
    owner: str
    helper: str | None = None

    @property
    def slot(self) -> tuple:
        return (self.proto, self.dst, self.dport)

    def as_dict(self, now: float) -> dict:
        src = ip_str(self.src) if self.src else "any"
        return {"proto": self.proto, "src": src, "dst": ip_str(self.dst),
                "dport": self.dport, "master": key_str(self.master), "helper": self.helper,
                "timeout": round(max(0.0, self.expires - now), 1), "owner": self.owner}


@dataclass(eq=False)
class CommonState:
    """State every node needs (the seed's VPN keys, authentication): name -> value."""

    name: str
    value: bytes
    owner: str


def tcp_next(state: str, fin_seen: int, direction: int, flags: int) -> tuple | str:
    """The TCP state (and FIN directions seen) after a segment with ``flags`` in
    ``direction``, or the drop reason that refuses it. Nothing changes here: the
    caller applies it once the segment has also passed the window check (an
    out-of-window RST must not close a connection)."""
    syn, ack = flags & TCP_SYN, flags & TCP_ACK
    if flags & TCP_RST:
        return CLOSE, fin_seen
    if syn:
        if direction == ORIGINAL and not ack and state in (SYN_SENT, SYN_RECV):
            return state, fin_seen  # retransmitted SYN
        if direction == REPLY and ack and state in (SYN_SENT, SYN_RECV):
            return SYN_RECV, fin_seen
        return "tcp_bad_syn"
    if state == SYN_SENT:
        return "tcp_invalid_state"  # nothing but SYN/ACK or RST answers a SYN
    if flags & TCP_FIN:
        fin_seen |= 1 << direction
        return (LAST_ACK if fin_seen == 3 else FIN_WAIT), fin_seen
    if state == SYN_RECV and direction == ORIGINAL and ack:
        return ESTABLISHED, fin_seen
    if state == LAST_ACK and ack:
        return TIME_WAIT, fin_seen
    return state, fin_seen


_UNASSURED = (SYN_SENT, SYN_RECV, UNREPLIED)


def assured(entry: Entry) -> bool:
    """A reply was seen (UDP, ICMP) or the handshake completed (TCP): keep it longest."""
    return entry.state not in _UNASSURED


class ConnectionTable:
    """Entries under their original direction's key, and pending expectations.

    A packet's key is looked up as it is, then reversed (a reply). Indexed by a key
    both directions share (the lower of the two), an entry whose original direction
    was the higher one held a second key for the index: 344 bytes an entry with its
    key instead of 298. The engine never makes an entry for a key whose reverse is
    held (it looks up both first), nor does a copy (``entry_key_clash``)."""

    def __init__(self, timeouts: Timeouts | None = None, max_entries: int = 1_000_000,
                 max_expectations: int = 4096):
        self.timeouts = timeouts or Timeouts()
        self.max_entries = max_entries
        self.max_expectations = max_expectations  # as nf_conntrack_expect_max
        # Entries not yet assured (no reply seen, TCP not established), oldest first and
        # by owner: the ones to evict when the table is full (Linux conntrack's early
        # drop). By owner, so that a backup copy evicts only copies at the cost of one
        # look, however many of the node's own connections are waiting too.
        self.unassured: dict[str, dict[Key, Entry]] = {}
        self.scanned = 0  # candidates early drop looked at, all told
        self.by_key: dict[Key, Entry] = {}  # entry.orig -> entry
        self.expectations: dict[tuple, list[Expectation]] = {}
        self.n_expectations = 0
        self.common: dict[str, CommonState] = {}
        self.sweep_slice, self.sweep_rounds = SWEEP_SLICE, SWEEP_ROUNDS
        self._pass: list[Entry] = []  # the entries of the sweep's pass under way
        self._pass_at = 0  # where in it the next round starts

    def __len__(self) -> int:
        return len(self.by_key)

    def entries(self):
        """Each entry once."""
        return self.by_key.values()

    def lookup(self, key: Key) -> tuple[Entry | None, int]:
        """The entry for either direction's ``key`` and which direction it is, or (None, -1)."""
        by_key = self.by_key
        entry = by_key.get(key)
        if entry is not None:
            return entry, ORIGINAL
        h = (len(key) >> 1) + 1  # reverse(key), inlined: each copy a bulk transfer applies
        entry = by_key.get(key[:1] + key[h:] + key[1:h])  # looks up both ways (1M of them)
        if entry is not None:
            return entry, REPLY
        return None, -1

    def full(self) -> bool:
        return len(self.by_key) >= self.max_entries

    def expectations_full(self) -> bool:
        return self.n_expectations >= self.max_expectations

    def n_unassured(self) -> int:
        return sum(map(len, self.unassured.values()))

    def _oldest_unassured(self, owner: str) -> Entry | None:
        """The oldest entry of ``owner`` still unassured; forgets (at most
        EVICTION_RANGE of) those before it that are gone, assured or another's since."""
        waiting = self.unassured[owner]
        for _ in range(EVICTION_RANGE):
            if not waiting:
                return None
            key = next(iter(waiting))
            entry = waiting[key]
            self.scanned += 1
            if self.by_key.get(key) is entry and not assured(entry) and entry.owner == owner:
                return entry
            del waiting[key]
        return None

    def early_drop(self, spare_owner: str | None = None) -> Entry | None:
        """Remove and return the oldest entry not yet assured (not one of
        ``spare_owner``'s, if given): room for a new one in a full table, or None.

        Like Linux (NF_CT_EVICTION_RANGE), bounded: it looks at the head of each
        owner's unassured entries, oldest first, and forgets at most EVICTION_RANGE
        stale ones per owner in one call, so a full table under a flood costs the same
        per packet."""
        victim = None
        for owner in list(self.unassured):
            if owner == spare_owner:
                continue
            head = self._oldest_unassured(owner)
            if head is None:
                if not self.unassured[owner]:
                    del self.unassured[owner]
            elif victim is None or head.created < victim.created:
                victim = head
        if victim is not None:
            self.remove(victim)
        return victim

    def _sweep_slice(self) -> list[Entry]:
        """The entries of the sweep's next round: a pass begins with the entries the
        table holds then (those added later wait for the next pass)."""
        if not self._pass:
            self._pass, self._pass_at = list(self.by_key.values()), 0
        size = max(self.sweep_slice, len(self._pass) // self.sweep_rounds + 1)
        start, self._pass_at = self._pass_at, self._pass_at + size
        part = self._pass[start:self._pass_at]
        if self._pass_at >= len(self._pass):
            self._pass = []  # the pass is over: let go of the entries it held
        return part

    def add(self, entry: Entry) -> None:
        self.by_key[entry.orig] = entry

    def remove(self, entry: Entry) -> None:
        """Drop an entry and the expectations it announced."""
        key = entry.orig
        if self.by_key.get(key) is entry:
            del self.by_key[key]
            self._unfile(entry)
        for exp in entry.expectations or ():
            self.unexpect(exp)
        entry.expectations = None

    def new_entry(self, key: Key, state: str, now: float, owner: str,
                  expires: float | None = None, rule: int = 0, helper: str | None = None,
                  related_to: Key | None = None) -> Entry:
        """Create and insert an entry whose original direction is ``key`` (the caller
        found none for it, either way), expiring at ``expires`` (default: after its
        state's timeout)."""
        if expires is None:
            expires = now + self.timeouts.for_state(key[0], state)
        entry = Entry(key, state, now, expires, owner, rule, helper)
        entry.changed = now
        if related_to is not None:
            entry.related_to = related_to
        self.by_key[key] = entry
        if state in _UNASSURED:
            self.unassured.setdefault(owner, {})[key] = entry
        return entry

    def state_changed(self, entry: Entry, now: float) -> None:
        """``entry`` moved to another state: an assured one is no candidate for early drop."""
        entry.changed = now
        if assured(entry):
            self._unfile(entry)

    def set_owner(self, entry: Entry, owner: str) -> None:
        """Hand ``entry`` to ``owner`` (adoption, hand-back, a copy's new owner)."""
        if owner == entry.owner:
            return
        if self._unfile(entry):
            self.unassured.setdefault(owner, {})[entry.orig] = entry
        entry.owner = owner

    def hand_over(self, entries: list[Entry], old: str, new: str) -> None:
        """Give ``entries``, all ``old``'s, to ``new`` (a failover's adoption): as
        ``set_owner`` each, but with one pass over ``old``'s unassured entries instead
        of a lookup an entry (the heir of 200k connections spent 160 ms at once)."""
        for entry in entries:
            entry.owner = new
        waiting = self.unassured.get(old)
        if waiting:  # filed after new's own, as set_owner files them
            moved = {key: e for key, e in waiting.items() if e.owner == new}
            for key in moved:
                del waiting[key]
            self.unassured.setdefault(new, {}).update(moved)

    def _unfile(self, entry: Entry) -> bool:
        """Take ``entry`` out of its owner's unassured entries; whether it was there."""
        waiting = self.unassured.get(entry.owner)
        if waiting is not None and waiting.get(entry.orig) is entry:
            del waiting[entry.orig]
            return True
        return False

    def expect(self, exp: Expectation) -> None:
        self.expectations.setdefault(exp.slot, []).append(exp)
        self.n_expectations += 1
        master, _ = self.lookup(exp.master)
        if master is not None:
            if master.expectations is None:
                master.expectations = []
            master.expectations.append(exp)

    def unexpect(self, exp: Expectation) -> None:
        waiting = self.expectations.get(exp.slot)
        if waiting and exp in waiting:
            waiting.remove(exp)
            self.n_expectations -= 1
            if not waiting:
                del self.expectations[exp.slot]

    def find_expectation(self, proto: int, src: bytes, dst: bytes, dport: int,
                         now: float) -> Expectation | None:
        """The live expectation that would admit this opening packet (not consumed)."""
        for exp in self.expectations.get((proto, dst, dport), ()):
            if exp.expires > now and (exp.src is None or exp.src == src):
                return exp
        return None

    def take_expectation(self, proto: int, src: bytes, dst: bytes, dport: int,
                         now: float) -> Expectation | None:
        """Consume the live expectation that admits this opening packet."""
        exp = self.find_expectation(proto, src, dst, dport, now)
        if exp is None:
            return None
        self.unexpect(exp)
        master, _ = self.lookup(exp.master)
        if master is not None and exp in (master.expectations or ()):
            master.expectations.remove(exp)
        return exp

    def expire(self, now: float, owner: str | None = None, incremental: bool = False
               ) -> tuple[list[Entry], list[Expectation]]:
        """Remove entries (of ``owner`` only, if given) and expectations past their
        timeout: every entry, or (``incremental``) the next slice of the sweep's pass."""
        by_key = self.by_key
        # a pass's entries removed or replaced since it began are not its to remove
        dead = [e for e in (self._sweep_slice() if incremental else by_key.values())
                if e.expires <= now and (owner is None or e.owner == owner)
                and by_key.get(e.orig) is e]
        for entry in dead:
            self.remove(entry)
        gone = [x for xs in self.expectations.values() for x in xs if x.expires <= now]
        for exp in gone:
            self.unexpect(exp)
            master, _ = self.lookup(exp.master)
            if master is not None and exp in (master.expectations or ()):
                master.expectations.remove(exp)
        return dead, gone

