"""Synchronization of state between cluster nodes (the seed's methods 400-800).

``SyncEngine`` is what the gateway engine's ``SyncPort`` stands for. It is pure:
time comes in as ``now``, received bytes come in through ``receive``, and the
bytes to send pile up in ``outbox`` as (peer id, bytes) for the node's shell.
Where each part of the seed is:

===============================================  =================================
settings (every setting, its range and default)  nodes/settings.py
reliable channel (seq, acks, resend, window)     nodes/sync/channel.py
on demand, periodic, combined, auto, delayed;    nodes/sync/replication.py
what goes where (common vs node-specific)
backup groups (who backs up whom)                nodes/groups.py
membership (failing, leaving, joining, bulk)     nodes/sync/membership.py
failure detection (shared with the controller)   nodes/failure.py
holding a packet (method 800)                    nodes/sync/hold.py
===============================================  =================================
"""
from __future__ import annotations

from collections import Counter, OrderedDict, deque

from nodes import syncproto as sp
from nodes.conntrack import ConnectionTable
from nodes.failure import DEAD, LEAVE, STALE, FailureDetector
from nodes.samples import percentiles
from nodes.settings import MODES, STATELESS, TRIGGERS, SettingsError, SyncSettings, \
    runtime_change
from nodes.sync.channel import PACK_BUDGET, Channel, pending_cap
from nodes.sync.hold import Hold
from nodes.sync.membership import Membership
from nodes.sync.replication import Replication, unprotected

SETTLED = 0.05  # seconds: an entry this old has normally reached its backups (lag p99 is ms)
MESSAGE_KIND = {sp.DATA: "data", sp.ACK: "acks", sp.HEARTBEAT: "heartbeats"}
UNSEQUENCED = (sp.HEARTBEAT, sp.HOME_QUERY, sp.HOME_ANSWER, sp.FORWARD)  # freshness counter

__all__ = ["MODES", "STATELESS", "TRIGGERS", "SettingsError", "SyncEngine", "SyncSettings",
           "runtime_change"]


def run_to_end(steps):
    """What a generator returns, once it has run to its end."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


class SyncEngine(Replication, Membership, Hold):
    """One node's side of state synchronization."""

    def __init__(self, me: int, members: list[int], table: ConnectionTable, key: bytes,
                 config: SyncSettings | None = None, names: dict[int, str] | None = None,
                 boot: int = 0, now: float = 0.0, observer: bool = False):
        """``boot`` is this incarnation, chosen at random by the shell (a restart gets a new one)."""
        self.config = config or SyncSettings()
        self.me, self.table, self.key = me, table, key
        self.members = sorted(set(members) | {me})
        self.names = names or {m: f"fw{m}" for m in self.members}
        self.name = self.names[me]
        self.ids = {n: i for i, n in self.names.items()}
        self.boot = boot  # random, from the shell: nothing may be inferred from its size
        self.counter = 0  # freshness counter of unsequenced messages (see nodes/syncproto.py)
        self.max_pending = pending_cap(table.max_entries, table.max_expectations)
        self.channels = {p: Channel(max_pending=self.max_pending)
                         for p in self.members if p != me}
        self.observer = observer  # also send heartbeats to peer 0 (the controller)
        self.alive = set(self.members)
        self.detector = FailureDetector(self.channels, self.config.dead_after,
                                        self.config.startup_grace, now)
        self._groups: tuple = ((), {})
        self.active = "ondemand" if self.config.mode == "auto" else self.config.mode
        self.replication = self.config.replication
        self._window = (now, 0)  # auto: start of the window, state changes in it
        self.outbox: list[tuple[int, bytes]] = []
        self.counters: Counter = Counter()
        self.rejected: Counter = Counter()
        self.dirty: dict = {}  # periodic differential: identity -> (kind, obj)
        self.windows: dict = {}  # window_sync "change": orig key -> entry whose window moved
        self.wants_windows = self._wants_windows()
        self.delayed: OrderedDict = OrderedDict()  # delayed replication: orig key -> Entry
        self.tombstones: OrderedDict = OrderedDict()  # expectation deleted before it came
        self.retired = [0, 0]  # bytes, unprotected bytes of my connections no longer in the table
        self.next_periodic = now + self.config.interval
        self.lag: deque = deque(maxlen=100_000)  # seconds from state change to acknowledgement
        self._changed_at: dict[tuple[int, int], float] = {}  # (peer, seq) -> time
        self.home_inbox: list = []  # authenticated home-forwarding messages
        self.on_peer_down: list = []  # callables(peer) told of every failure or leave
        self.adopted: dict[int, tuple[set, float]] = {}  # peer -> (keys adopted, when)
        self.suspected: dict[int, int] = {}  # peer taken for dead -> its boot epoch then
        self.departed: set[int] = set()  # peers whose last heartbeat was a goodbye
        self.next_heartbeat = now
        self.last_tick = now  # this node's last tick, and its longest pause since it
        self.paused = 0.0      # last judged its peers (see Membership._heartbeats)
        self.leaving = False
        # Set by the shell when messages wait unread (its read was cut short): peers'
        # heartbeats may be among them, so failure judgement waits a little longer.
        self.unread = False
        self.events: list[tuple] = []  # (time, kind, fields): membership changes, for the log
        self.bulk_ms_last: float | None = None  # the last bulk transfer received, start to end
        # Ask every peer for the state this node must hold (method 700, step 704).
        self.bulk_waiting = set(self.channels) if not self.stateless else set()
        self.bulk_deadline = now + self.config.bulk_timeout
        self.bulk_started: dict[int, float] = {}
        self.bulk_counts: dict[int, int] = {}  # peer -> records applied since its BULK_START
        self.bulk_answered: dict[int, int] = {}  # peer -> the boot whose request was answered
        self.started, self.ready_logged = now, False
        for peer in self.bulk_waiting:
            self.channels[peer].pending.append((sp.R_BULK_REQUEST, {}))

    @property
    def stateless(self) -> bool:
        return self.config.mode in STATELESS

    @property
    def idle(self) -> bool:
        """Nothing unacknowledged on any channel (a leaving node may go)."""
        return not any(ch.unacked for ch in self.channels.values())

    def reconfigure(self, config: SyncSettings, now: float) -> None:
        """Take new settings at run time (the control socket's ``set``)."""
        self.config = config
        self.active = "ondemand" if config.mode == "auto" else config.mode
        self.replication = config.replication
        self.next_periodic = now + config.interval
        self.wants_windows = self._wants_windows()

    # -- the clock -------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Heartbeats, failure detection, periodic sync, retransmissions, pending records."""
        self._heartbeats(now)  # mode none too: membership without state
        if self.stateless:
            self.flush(now)
            return
        if self.config.mode == "auto":
            self._auto(now)
        if self.periodic_on and now >= self.next_periodic:
            self.periodic_sync(now)
        if self.delayed:
            self._release_delayed(now)
        for peer, ch in self.channels.items():
            if peer not in self.alive:
                continue
            for data in ch.due(now, self.config.rto):
                self.outbox.append((peer, data))
                self.counters["retransmissions"] += 1
                self.counters["bytes_sent"] += len(data)
                self.counters["data_bytes_sent"] += len(data)
        self.flush(now)

    # -- sending -----------------------------------------------------------------
    def flush(self, now: float, budget: int | None = PACK_BUDGET) -> None:
        """Pack pending records into DATA messages (up to ``budget`` a peer, None: all),
        and send due acks."""
        if self.windows:
            self._send_windows(now)
        for peer, ch in self.channels.items():
            if peer not in self.alive:
                ch.pending.clear()
                ch.urgent.clear()
                if ch.ack_due:  # a departed peer still replicating: what it sends is
                    self._ack(peer, ch)  # applied (and adopted) here, so acknowledged
                continue
            if not ch.peer_boot:  # its incarnation is not confirmed yet: it would refuse
                if ch.urgent:  # them; no hold waits for it, and they wait with the rest
                    ch.pending.extend(ch.urgent)
                    ch.urgent.clear()
                continue
            for seq, data, kinds in ch.pack(self.me, peer, self.boot, self.key, now,
                                            self.config.rto, budget, self._record):
                self._changed_at[peer, seq] = ch.unacked[seq].queued  # its oldest record
                self.outbox.append((peer, data))
                self.counters["messages_sent"] += 1
                self.counters["records_sent"] += len(kinds)
                for rtype in kinds:
                    self.counters[sp.SENT[rtype]] += 1
                self.counters["bytes_sent"] += len(data)
                self.counters["data_bytes_sent"] += len(data)
            if ch.overflow:
                self.counters["records_dropped_overflow"] += ch.overflow
                self.events.append((now, "sync_overflow", {"peer": self.names[peer],
                                                           "records": ch.overflow}))
                ch.overflow = 0
            if ch.ack_due:
                self._ack(peer, ch)

    def acknowledge(self) -> None:
        """Send the acknowledgements that are due, and nothing else (a node reading a
        long burst of messages: a held packet at the sender waits for them)."""
        for peer, ch in self.channels.items():
            if ch.ack_due and ch.peer_boot:
                self._ack(peer, ch)

    def _ack(self, peer: int, ch: Channel) -> None:
        self._send(peer, sp.Message(sp.ACK, self.me, peer, self.boot, 0, ch.expected - 1,
                                    to_boot=ch.peer_boot))
        ch.ack_due = False

    def stamp(self, peer: int) -> tuple[int, int]:
        """(freshness counter, the peer's incarnation) for an unsequenced message to
        ``peer`` (0: every node): heartbeats and home-node forwarding use it."""
        self.counter += 1
        ch = self.channels.get(peer)
        return self.counter, ch.to_boot if ch is not None else 0

    def _send(self, peer: int, msg: sp.Message) -> None:
        data = sp.encode(msg, self.key)
        self.outbox.append((peer, data))
        kind = MESSAGE_KIND[msg.type]
        self.counters[f"{kind}_sent"] += 1
        self.counters[f"{kind.rstrip('s')}_bytes_sent"] += len(data)
        self.counters["bytes_sent"] += len(data)

    # -- receiving -----------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> None:
        """Verify, order and apply one message from the sync network."""
        try:
            msg = sp.decode(data, self.key)
        except sp.Reject as err:
            self.rejected[err.reason] += 1
            return
        ch = self.channels.get(msg.sender)
        if ch is None or msg.receiver not in (0, self.me):
            self.rejected["not_a_member" if ch is None else "not_for_me"] += 1
            return
        if msg.type == sp.DEATH:  # for every node, from the host of a node that died
            self._death_notice(msg, ch, now)
            return
        to_all = msg.type == sp.HOME_QUERY and msg.receiver == 0 and msg.to_boot == 0 \
            and msg.boot == ch.peer_boot  # multicast: fresh by its counter alone
        if msg.to_boot != self.boot and not to_all:  # for an earlier incarnation of me, or a hello
            if msg.type == sp.HEARTBEAT and msg.boot not in ch.past and (
                    not ch.peer_boot or self.detector.silent([msg.sender], now)):
                ch.hello_boot = msg.boot  # name it in what I send: it will answer fresh
                self.counters["hellos_received"] += 1
            else:
                self.rejected["stale_incarnation"] += 1
            return
        if msg.boot in ch.past:  # an incarnation of the sender that is over (or died)
            self.rejected["old_boot"] += 1
            return
        if msg.boot != ch.peer_boot:
            if ch.peer_boot:  # the peer restarted: it lost all it had from us
                self.counters["peer_restarts"] += 1
                past = ch.past | {ch.peer_boot}
                self.channels[msg.sender] = ch = Channel(past=past,
                                                         max_pending=self.max_pending)
            ch.peer_boot = msg.boot
        if msg.type in UNSEQUENCED:
            # A multicast names no receiver incarnation: it must be newer than the first
            # fresh unicast one of this incarnation (a replay from before my start is not).
            if (to_all and (not ch.first or msg.seq <= ch.first)) or not ch.fresh(msg.seq):
                self.rejected["replayed"] += 1  # a copy of one already accepted, or too old
                return
            if not to_all and not ch.first:
                ch.first = msg.seq
        self.counters["bytes_received"] += len(data)
        if msg.type == sp.HEARTBEAT:
            verdict = self.detector.heard(msg.sender, msg.boot, msg.seq, msg.members, now)
            if verdict == STALE:  # older than a heartbeat already heard (read out of order)
                self.rejected["replayed"] += 1
                return
            # A peer that said goodbye is back when its heartbeat says so, not when it
            # sends records: an offline node still replicates what it sees, and taking
            # each record for a return made it flap in and out of the view.
            (self.departed.add if verdict == LEAVE else self.departed.discard)(msg.sender)
        else:
            verdict = self.detector.touch(msg.sender, now)
        if verdict == LEAVE:
            self.peer_failed(msg.sender, now, "node_offline")  # a graceful leave
            return
        if msg.sender not in self.departed:
            self._heard(msg.sender, now)
        if msg.type in (sp.HOME_QUERY, sp.HOME_ANSWER, sp.FORWARD):
            self.home_inbox.append(msg)  # for the node's HomeForwarder
            return
        if msg.type in (sp.DATA, sp.ACK):
            done = ch.acknowledge(msg.ack, now)
            if isinstance(done, str):
                self.rejected[done] += 1
            elif not done and msg.type == sp.ACK:
                self.rejected["duplicate_ack"] += 1  # acknowledges nothing new: not applied
            else:
                for seq in done:
                    changed = self._changed_at.pop((msg.sender, seq), None)
                    if changed is not None:
                        self.lag.append(now - changed)
        if msg.type != sp.DATA:
            self.counters[f"{MESSAGE_KIND[msg.type]}_received"] += 1
            return
        self.counters["messages_received"] += 1
        early = ch.expected
        reason, records = ch.accept(msg.seq, msg.records, self.config.window)
        if reason:
            self.rejected[reason] += 1
            return
        if msg.seq != early:
            self.counters["out_of_order"] += 1
        self._apply_all(msg.sender, records, now)

    def _death_notice(self, msg: sp.Message, ch: Channel, now: float) -> None:
        """The peer's process ended (nodes/shell/deathwatch.py): it has failed, now.
        Only for the incarnation this node knows; anything of it still in flight is
        refused from here on (an old boot), so no late record brings it back."""
        verdict = STALE if ch.peer_boot and msg.boot != ch.peer_boot \
            else self.detector.died(msg.sender, msg.boot)
        if verdict == STALE:
            self.rejected["death_not_current"] += 1
            return
        ch.past = ch.past | {msg.boot}
        self.counters["death_notices_received"] += 1
        if verdict == DEAD:
            self.peer_failed(msg.sender, now, announced=True)
        # UNHEARD: it died starting; its silence is judged at the next round

    # -- observation -----------------------------------------------------------------
    def table_pass(self, now: float | None = None, size: int | None = None):
        """The table's figures for ``stats``, in one pass over the entries it holds now:
        a generator that yields after each slice of ``size`` entries (None: all at once)
        and returns (owned, settled, bytes carried, unprotected bytes, backup_of). A node
        answers ``stats`` a slice at a time: at once, a pass over 200k entries took 70 ms
        in process, and its peers take a node silent for 100 ms for a failed one."""
        me = self.name
        owned = settled = 0
        carried, unprotected_bytes = self.retired
        backup_of: Counter = Counter()
        young = float("inf") if now is None else now - SETTLED
        entries = list(self.table.entries())
        size = size or max(1, len(entries))
        for start in range(0, len(entries), size):
            for e in entries[start:start + size]:
                if e.owner != me:
                    backup_of[e.owner] += 1
                    continue
                owned += 1
                settled += e.created <= young
                carried += e.bytes_orig + e.bytes_reply
                unprotected_bytes += unprotected(e)
            yield
        if now is None:
            settled = owned
        return owned, settled, carried, unprotected_bytes, backup_of

    def stats(self, now: float | None = None, table: tuple | None = None) -> dict:
        """Counters for the inspection command. With ``now``, also how many of my entries
        are older than SETTLED (their copies should have reached the backups by then).
        ``table``: what ``table_pass`` returned (default: that pass, at once)."""
        if table is None:
            table = run_to_end(self.table_pass(now))
        owned, settled, carried, unprotected_bytes, backup_of = table
        lag = percentiles(self.lag)
        backups = self.groups().get(self.me, [])
        return {"mode": self.config.mode, "active": self.active, "replication": self.replication,
                "settings": {"k": self.config.k, "selection": self.config.selection,
                             "triggers": list(self.config.triggers), "delay": self.config.delay},
                "members": self.members, "alive": sorted(self.alive),
                "ready": self.ready, "offline": self.leaving,
                "backups": backups, "backup_nodes": [self.names[b] for b in backups],
                "backup_of": dict(backup_of),
                "entries_owned": owned, "entries_backup": len(self.table) - owned,
                "entries_owned_settled": settled,
                "common": self.table.n_expectations + len(self.table.common),
                "unacked": {self.names[p]: len(c.unacked) for p, c in self.channels.items()},
                # each peer's retransmission timer as it stands (RFC 6298: nodes/sync/channel.py)
                "rto_ms": {self.names[p]: round(c.rto(self.config.rto) * 1000, 3)
                           for p, c in self.channels.items()},
                "lag_ms_p50": lag.get("p50"), "lag_ms_p99": lag.get("p99"),
                "bulk_ms_last": self.bulk_ms_last,
                "delayed": len(self.delayed), "bytes_carried": carried,
                "unprotected_bytes": unprotected_bytes,
                "counters": dict(self.counters), "rejected": dict(self.rejected)}
