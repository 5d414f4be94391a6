"""Synchronization of state between cluster nodes (the seed's methods 400-800).

``SyncEngine`` is what the gateway engine's ``SyncPort`` stands for. It is pure:
time comes in as ``now``, received bytes come in through ``receive``, and the
bytes to send pile up in ``outbox`` as (peer id, bytes) for the node's shell.

- Modes: ``none``; ``periodic`` (every ``interval``, ``full`` or
  ``differential``: prior art); ``ondemand`` (method 400: a sync per
  predetermined action, each switchable); ``combined`` (method 500: both, and an
  on-demand sync resets the periodic timer).
- What goes where: expectations and common records (state any node may need)
  to every member; connection entries to the owner's backup nodes (method 600),
  or to every member with ``replication = "full"``.
- Reliability (after conntrackd's FT-FW): per peer a sequence-numbered channel,
  cumulative acknowledgements, a resend queue with a retransmission timeout, an
  out-of-order window; duplicates and replays are dropped and counted.
- Delayed replication (Check Point's and FortiGate's delayed sync; Feng et al.,
  GLOBECOM 2008): with ``delay = D`` on-demand sync sends a new connection's
  entry only once it is D seconds old, and never if it closed before (a
  periodic round, in mode combined, sends what changed regardless); short connections
  cost no sync traffic and are not protected while young. ``stats`` reports
  the bytes connections carried before a replica of them left
  (``unprotected_bytes``) against all they carried.
- Holding (method 800): ``request_sync`` returns a ticket that is ``done`` once
  every live member that must know has acknowledged it.
- Membership (method 700): heartbeats; a peer not heard for ``dead_after`` has
  failed (a heartbeat that leaves its sender out is a graceful leave). The
  failed node's first live backup adopts its connections; every node sends its
  own entries to backups it did not have before, so no node is left without one,
  and drops copies of nodes it no longer backs up. A new or restarted node asks
  every peer for state (BULK_REQUEST) and is ``ready`` once each has answered
  with common state and the entries the newcomer must back up (BULK_END).
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from nodes import syncproto as sp
from nodes.conntrack import (CLOSE, TIME_WAIT, CommonState, ConnectionTable, Entry,
                             Expectation)
from nodes.engine import percentiles
from nodes.groups import adopter, connection_backups, node_backups

CLOSED = (TIME_WAIT, CLOSE)  # a connection over: nothing left to protect
SETTLED = 0.05  # seconds: an entry this old has normally reached its backups (lag p99 is ms)
MODES = ("none", "periodic", "ondemand", "combined", "auto", "home")
STATELESS = ("none", "home")  # membership only; "home" forwards packets instead (nodes/home.py)
TRIGGERS = ("state_modified", "node_failed", "state_requested", "node_offline",
            "multi_node_session", "new_connection")
# Which predetermined action a state change of the gateway engine is.
_TRIGGER_OF = {"new": "new_connection", "update": "state_modified",
               "destroy": "state_modified", "expect": "state_modified", "common": "state_modified",
               "unexpect": "state_modified", "multi_node": "multi_node_session"}


@dataclass
class SyncConfig:
    """How a cluster synchronizes; the same on every node."""

    mode: str = "ondemand"
    interval: float = 1.0
    periodic: str = "differential"  # or "full"
    triggers: tuple = TRIGGERS
    replication: str = "backup"  # or "full"
    k: int = 1
    selection: str = "node"  # or "connection"
    hold: bool = True
    rto: float = 0.02  # seconds before an unacknowledged message is sent again
    window: int = 4096  # messages a receiver buffers out of order
    heartbeat: float = 0.02  # seconds between heartbeats on the sync network
    dead_after: float = 0.1  # a peer not heard from for this long has failed
    bulk_timeout: float = 2.0  # a joining node is ready after this even without answers
    budget_bandwidth: float = 0.0  # auto: bytes/s of on-demand sync before going periodic
    budget_entries: int = 0  # auto: entries per node before full replication gives way
    delay: float = 0.0  # delayed replication: a new connection is sent once this old (seconds)

    def validate(self) -> None:
        """Raise ValueError, in one line, for a setting that cannot work."""
        if self.mode not in MODES:
            raise ValueError(f"sync mode {self.mode!r} unknown (use {', '.join(MODES)})")
        if self.periodic not in ("full", "differential"):
            raise ValueError("periodic must be 'full' or 'differential'")
        bad = set(self.triggers) - set(TRIGGERS)
        if bad:
            raise ValueError(f"unknown triggers {sorted(bad)} (known: {', '.join(TRIGGERS)})")
        if self.replication not in ("backup", "full"):
            raise ValueError("replication must be 'backup' or 'full'")
        if self.selection not in ("node", "connection"):
            raise ValueError("selection must be 'node' or 'connection'")
        if not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise ValueError(f"delay = {self.delay!r}: seconds a new connection waits before "
                             "it is replicated, >= 0 (0: at once)")
        if self.k < 1 or self.interval <= 0 or self.rto <= 0:
            raise ValueError("k must be >= 1, interval and rto > 0")
        if not 0 < self.heartbeat < self.dead_after:
            raise ValueError("heartbeat must be > 0 and shorter than dead_after")
        if self.mode == "auto" and self.budget_bandwidth <= 0 and self.budget_entries <= 0:
            raise ValueError("mode auto needs budget_bandwidth (bytes/s) or budget_entries")



@dataclass
class _Sent:
    data: bytes
    last_sent: float
    records: int


@dataclass
class Channel:
    """Both directions of the reliable channel with one peer."""

    next_seq: int = 1  # to send
    acked: int = 0  # highest seq the peer acknowledged
    unacked: OrderedDict = field(default_factory=OrderedDict)  # seq -> _Sent
    expected: int = 1  # next seq wanted from the peer
    early: dict = field(default_factory=dict)  # seq -> records, received out of order
    peer_boot: int = 0
    ack_due: bool = False
    pending: list = field(default_factory=list)  # records waiting to be packed
    resend_at: float = float("inf")  # no unacknowledged message is due before this


# What ``set KEY=VALUE`` may change on a running node, and how to read each value.
SETTABLE = {"mode": str, "interval": float, "periodic": str,
            "hold": lambda v: v in ("1", "on", "true"),
            "triggers": lambda v: tuple(t for t in v.split(",") if t), "replication": str,
            "budget_bandwidth": float, "budget_entries": int, "delay": float}


def runtime_change(config: SyncConfig, args: str) -> SyncConfig:
    """The settings after ``args`` ("mode=periodic interval=2"); ValueError in one line.

    Mode home forwards packets to their home node instead of synchronizing
    (nodes/home.py): a node is started in it or not, so no switch to or from it.
    """
    changes = {}
    for item in args.split():
        name, sep, value = item.partition("=")
        if name not in SETTABLE or not sep:
            raise ValueError(f"cannot set {item!r}: use KEY=VALUE with KEY one of "
                             f"{', '.join(SETTABLE)}")
        try:
            changes[name] = SETTABLE[name](value)
        except ValueError:
            raise ValueError(f"{name} = {value!r} is not a {SETTABLE[name].__name__}") from None
    if not changes:
        raise ValueError(f"nothing to set: give KEY=VALUE with KEY one of {', '.join(SETTABLE)}")
    candidate = dataclasses.replace(config, **changes)
    candidate.validate()
    if (candidate.mode == "home") != (config.mode == "home"):
        raise ValueError("mode home is chosen when the cluster starts (e.g. make cli SYNC=home),"
                         " not switched at run time")
    return candidate


class SyncEngine:
    """One node's side of state synchronization."""

    def __init__(self, me: int, members: list[int], table: ConnectionTable, key: bytes,
                 config: SyncConfig | None = None, names: dict[int, str] | None = None,
                 boot: int | None = None, now: float = 0.0, observer: bool = False):
        self.config = config or SyncConfig()
        self.config.validate()
        self.me, self.table, self.key = me, table, key
        self.members = sorted(set(members) | {me})
        self.names = names or {m: f"fw{m}" for m in self.members}
        self.ids = {n: i for i, n in self.names.items()}
        self.boot = boot if boot is not None else int(time.time() * 1000)
        self.channels = {p: Channel() for p in self.members if p != me}
        self.observer = True if observer else None  # also send heartbeats to peer 0
        self.alive = set(self.members)
        self._groups: tuple = ((), {})
        self.active = "ondemand" if self.config.mode == "auto" else self.config.mode
        self.replication = self.config.replication
        self._window = (now, 0)  # auto: start of the window, state changes in it
        self.outbox: list[tuple[int, bytes]] = []
        self.counters: Counter = Counter()
        self.rejected: Counter = Counter()
        self.dirty: dict = {}  # periodic differential: identity -> (kind, obj)
        self.delayed: OrderedDict = OrderedDict()  # delayed replication: orig key -> Entry
        self.retired = [0, 0]  # bytes, unprotected bytes of my connections no longer in the table
        self.next_periodic = now + self.config.interval
        self.lag: deque = deque(maxlen=100_000)  # seconds from state change to acknowledgement
        self._changed_at: dict[tuple[int, int], float] = {}  # (peer, seq) -> time
        self.last_heard = {p: now for p in self.channels}
        self.heard_once: set[int] = set()
        self.home_inbox: list = []  # authenticated home-forwarding messages
        self.on_peer_down: list = []  # callables(peer) told of every failure or leave
        self.adopted: dict[int, tuple[set, float]] = {}  # peer -> (keys adopted, when)
        self.suspected: dict[int, int] = {}  # peer taken for dead -> its boot epoch then
        self.next_heartbeat = now
        self.leaving = False
        self.events: list[tuple] = []  # (time, kind, fields): membership changes, for the log
        # Ask every peer for the state this node must hold (method 700, step 704).
        self.bulk_waiting = set(self.channels) if self.config.mode not in STATELESS else set()
        self.bulk_deadline = now + self.config.bulk_timeout
        self.bulk_started: dict[int, float] = {}
        self.started, self.ready_logged = now, False
        for peer in self.bulk_waiting:
            self.channels[peer].pending.append((sp.R_BULK_REQUEST, {}))

    @property
    def periodic_on(self) -> bool:
        return self.active in ("periodic", "combined")

    @property
    def ondemand_on(self) -> bool:
        return self.active in ("ondemand", "combined")

    def reconfigure(self, config: SyncConfig, now: float) -> None:
        """Take new settings at run time (the control socket's ``set``)."""
        config.validate()
        self.config = config
        self.active = "ondemand" if config.mode == "auto" else config.mode
        self.replication = config.replication
        self.next_periodic = now + config.interval

    def _auto(self, now: float) -> None:
        """Mode auto: switch by projected sync bandwidth and by table size (method 500)."""
        start, changes = self._window
        if now - start >= 1.0:
            rate = changes * 40 / (now - start)  # ~ bytes a state change costs on demand
            budget = self.config.budget_bandwidth
            if budget and self.active == "ondemand" and rate > budget:
                self._switch("active", "periodic", now, rate=round(rate))
            elif budget and self.active == "periodic" and rate < budget / 2:
                self._switch("active", "ondemand", now, rate=round(rate))
            self._window = (now, 0)
        limit = self.config.budget_entries
        if limit and self.config.replication == "full":
            if self.replication == "full" and len(self.table) > limit:
                self._switch("replication", "backup", now, entries=len(self.table))
            elif self.replication == "backup" and len(self.table) < limit / 2:
                self._switch("replication", "full", now, entries=len(self.table))

    def _switch(self, what: str, value: str, now: float, **why) -> None:
        setattr(self, what, value)
        self.counters[f"auto_{what}_{value}"] += 1
        self.events.append((now, "sync_switch", {what: value, **why}))
        if what == "replication":
            self._regroup(sorted(self.alive), now)
        else:
            self.next_periodic = now + self.config.interval

    # -- the SyncPort the gateway engine calls -----------------------------
    def state_changed(self, kind: str, obj: object, now: float) -> None:
        """A predetermined action: record it, and sync now if its trigger is on."""
        if self.config.mode in STATELESS:
            return
        if self.config.mode == "auto":
            self._window = (self._window[0], self._window[1] + 1)
        if self.periodic_on and kind != "multi_node":
            self.dirty[_identity(kind, obj)] = (kind, obj)
        trigger = _TRIGGER_OF.get(kind)
        if kind == "destroy" and isinstance(obj, Entry):
            self._retire(obj)
        if isinstance(obj, Entry) and self._delaying(kind, obj):
            return
        if self.ondemand_on and trigger in self.config.triggers:
            self._queue(kind, obj, now)
            self.counters[f"trigger_{trigger}"] += 1
            if self.active == "combined":
                self.next_periodic = now + self.config.interval

    def _delaying(self, kind: str, entry: Entry) -> bool:
        """Delayed replication: keep a young connection back; True if this change waits."""
        if kind == "new" and self.config.delay > 0 and self.ondemand_on:
            self.delayed[entry.orig] = entry
            self.counters["entries_delayed"] += 1
            return True
        if self.delayed.get(entry.orig) is not entry:
            return False
        if kind == "multi_node":  # another node sees its packets: it needs the state now
            del self.delayed[entry.orig]
            self.counters["entries_delayed_sent"] += 1
            return False
        if kind == "destroy":  # it closed while young: its peers never hear of it
            del self.delayed[entry.orig]
            self.counters["entries_never_replicated"] += 1
        return True  # an update: the entry goes, as it is then, when it is due

    def _release_delayed(self, now: float) -> None:
        """Send the waiting connections old enough; forget those that closed meanwhile."""
        while self.delayed:
            entry = next(iter(self.delayed.values()))
            if now - entry.created < self.config.delay:
                break
            del self.delayed[entry.orig]
            if entry.state in CLOSED:
                self.counters["entries_never_replicated"] += 1
            else:
                self._queue("new", entry, now)
                self.counters["entries_delayed_sent"] += 1

    def next_release(self) -> float | None:
        """When the oldest waiting connection is due (delayed replication), or None."""
        if not self.delayed:
            return None
        return next(iter(self.delayed.values())).created + self.config.delay

    def _retire(self, entry: Entry) -> None:
        """Keep the byte counts of one of my connections that leaves the table."""
        if entry.owner == self.names[self.me]:
            self.retired[0] += sum(entry.bytes)
            self.retired[1] += _unprotected(entry)

    def request_sync(self, reason: str, objs: list, now: float) -> object:
        """Protocol code asks for ``objs`` to reach the nodes now; a ticket or None."""
        if not self.ondemand_on or "new_connection" not in self.config.triggers:
            return None
        self.flush(now)
        ticket = {}
        for obj in objs:
            for peer in self._destinations(obj):
                ch = self.channels[peer]
                if ch.unacked:
                    ticket[peer] = next(reversed(ch.unacked))  # the message carrying it
        self.counters["sync_requests"] += 1
        return ticket if self.config.hold else None

    def done(self, ticket: object, now: float) -> bool:
        """True once every live peer of ``ticket`` acknowledged its message."""
        return all(self.channels[p].acked >= seq or p not in self.alive
                   for p, seq in ticket.items())

    # -- sending -------------------------------------------------------------
    def groups(self) -> dict[int, list[int]]:
        """Backup groups of the live members (cached until membership changes)."""
        live = tuple(sorted(self.alive))
        if self._groups[0] != live:
            self._groups = (live, node_backups(list(live), self.config.k))
        return self._groups[1]

    def _destinations(self, obj: object) -> list[int]:
        if isinstance(obj, Entry) and self.replication == "backup":
            owner = self.ids.get(obj.owner, self.me)
            if self.config.selection == "connection":
                peers = connection_backups(sp.key_bytes(obj.orig), owner, sorted(self.alive),
                                           self.config.k)
            else:
                peers = self.groups().get(owner, [])
            return [p for p in peers if p != self.me]
        return [p for p in sorted(self.alive) if p != self.me]

    def _record(self, kind: str, obj: object, now: float) -> tuple[int, dict]:
        if isinstance(obj, CommonState):
            return sp.R_COMMON, {"owner": self.ids.get(obj.owner, self.me), "name": obj.name,
                                 "value": obj.value}
        if isinstance(obj, Entry):
            owner = self.ids.get(obj.owner, self.me)
            if kind == "destroy":
                return sp.R_ENTRY_DEL, {"key": obj.orig, "owner": owner}
            return sp.R_ENTRY, {"key": obj.orig, "state": obj.state, "owner": owner,
                                "timeout": max(0.0, obj.expires - now), "helper": obj.helper,
                                "master": obj.related_to}
        owner = self.ids.get(obj.owner, self.me)
        fields = {"proto": obj.proto, "src": obj.src, "dst": obj.dst, "dport": obj.dport,
                  "owner": owner}
        if kind == "unexpect":
            return sp.R_EXPECT_DEL, fields
        return sp.R_EXPECT, {**fields, "timeout": max(0.0, obj.expires - now),
                             "master": obj.master}

    def _queue(self, kind: str, obj: object, now: float, peers: list[int] | None = None) -> None:
        record = self._record(kind, obj, now)
        peers = self._destinations(obj) if peers is None else peers
        for peer in peers:
            self.channels[peer].pending.append(record)
        if peers and isinstance(obj, Entry) and obj.replicated_at_bytes < 0:
            obj.replicated_at_bytes = sum(obj.bytes)

    def flush(self, now: float) -> None:
        """Pack every pending record into DATA messages, and send due acks."""
        for peer, ch in self.channels.items():
            if peer not in self.alive:
                ch.pending.clear()
                continue
            if ch.pending:
                chunks, size, kinds = [], 0, []
                for rtype, fields in ch.pending:
                    rec = sp.encode_record(rtype, fields)
                    if chunks and size + len(rec) > sp.MAX_PAYLOAD:
                        self._send_data(peer, ch, b"".join(chunks), kinds, now)
                        chunks, size, kinds = [], 0, []
                    chunks.append(rec)
                    kinds.append(rtype)
                    size += len(rec)
                self._send_data(peer, ch, b"".join(chunks), kinds, now)
                ch.pending.clear()
            if ch.ack_due:
                self._send(peer, sp.Message(sp.ACK, self.me, peer, self.boot, 0, ch.expected - 1))
                ch.ack_due = False

    def _send_data(self, peer: int, ch: Channel, payload: bytes, kinds: list, now: float) -> None:
        """One DATA message carrying already encoded records of types ``kinds``."""
        seq = ch.next_seq
        ch.next_seq += 1
        data = sp.seal(sp.DATA, self.me, peer, self.boot, seq, ch.expected - 1, payload, self.key)
        ch.unacked[seq] = _Sent(data, now, len(kinds))
        ch.resend_at = min(ch.resend_at, now + self.config.rto)
        ch.ack_due = False  # the ack rides along
        self._changed_at[peer, seq] = now
        self.outbox.append((peer, data))
        self.counters["messages_sent"] += 1
        self.counters["records_sent"] += len(kinds)
        for rtype in kinds:
            self.counters[f"sent_{sp.RECORD_NAMES[rtype]}"] += 1
        self.counters["bytes_sent"] += len(data)
        self.counters["data_bytes_sent"] += len(data)

    def _send(self, peer: int, msg: sp.Message) -> None:
        data = sp.encode(msg, self.key)
        self.outbox.append((peer, data))
        kind = ('', 'data', 'ack', 'heartbeat')[msg.type]
        self.counters[f"{kind}_sent"] += 1
        self.counters[f"{kind}_bytes_sent"] += len(data)
        self.counters["bytes_sent"] += len(data)

    def tick(self, now: float) -> None:
        """Heartbeats, failure detection, periodic sync, retransmissions, pending records."""
        self._heartbeats(now)  # mode none too: membership without state
        if self.config.mode in STATELESS:
            self.flush(now)
            return
        if self.config.mode == "auto":
            self._auto(now)
        if self.periodic_on and now >= self.next_periodic:
            self.periodic_sync(now)
        if self.delayed:
            self._release_delayed(now)
        for peer, ch in self.channels.items():
            if peer not in self.alive or now < ch.resend_at:
                continue  # nothing due: no scan of the resend queue
            ch.resend_at = float("inf")
            for seq, sent in ch.unacked.items():
                if now - sent.last_sent >= self.config.rto:
                    sent.last_sent = now
                    self.outbox.append((peer, sent.data))
                    self.counters["retransmissions"] += 1
                    self.counters["bytes_sent"] += len(sent.data)
                    self.counters["data_bytes_sent"] += len(sent.data)
                ch.resend_at = min(ch.resend_at, sent.last_sent + self.config.rto)
        self.flush(now)

    def periodic_sync(self, now: float) -> None:
        """Send what changed (differential) or everything this node owns (full)."""
        self.next_periodic = now + self.config.interval
        self.counters["periodic_syncs"] += 1
        if self.config.periodic == "full":
            for entry in self.table.entries():
                if entry.owner == self.names[self.me]:
                    self._queue("update", entry, now)
            for exps in self.table.expectations.values():
                for exp in exps:
                    if exp.owner == self.names[self.me]:
                        self._queue("expect", exp, now)
            for common in self.table.common.values():
                if common.owner == self.names[self.me]:
                    self._queue("common", common, now)
        else:
            for kind, obj in self.dirty.values():
                self._queue(kind, obj, now)
        self.dirty.clear()

    # -- receiving -----------------------------------------------------------
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
        if msg.boot < ch.peer_boot:
            self.rejected["old_boot"] += 1
            return
        if msg.boot > ch.peer_boot:
            if ch.peer_boot:  # the peer restarted: it lost all it had from us
                self.counters["peer_restarts"] += 1
                self.channels[msg.sender] = ch = Channel()
            ch.peer_boot = msg.boot
        self.counters["bytes_received"] += len(data)
        if msg.type == sp.HEARTBEAT and msg.sender not in msg.members:
            self.peer_failed(msg.sender, now, "node_offline")  # a graceful leave
            self.last_heard[msg.sender] = now
            return
        self._heard(msg.sender, now)
        if msg.type in (sp.HOME_QUERY, sp.HOME_ANSWER, sp.FORWARD):
            self.home_inbox.append(msg)  # for the node's HomeForwarder
            return
        if msg.type in (sp.DATA, sp.ACK):
            self._acked(msg.sender, ch, msg.ack, now)
        if msg.type != sp.DATA:
            self.counters[("", "", "acks", "heartbeats")[msg.type] + "_received"] += 1
            return
        self.counters["messages_received"] += 1
        ch.ack_due = True
        if msg.seq < ch.expected or msg.seq in ch.early:
            self.rejected["duplicate"] += 1
            return
        if msg.seq >= ch.expected + self.config.window:
            self.rejected["outside_window"] += 1
            return
        ch.early[msg.seq] = msg.records
        if msg.seq != ch.expected:
            self.counters["out_of_order"] += 1
        while ch.expected in ch.early:
            for rtype, fields in ch.early.pop(ch.expected):
                self._apply(msg.sender, rtype, fields, now)
            ch.expected += 1

    def _acked(self, peer: int, ch: Channel, ack: int, now: float) -> None:
        if ack <= ch.acked:
            return
        if ack >= ch.next_seq:
            self.rejected["ack_beyond_sent"] += 1
            return
        ch.acked = ack
        while ch.unacked and next(iter(ch.unacked)) <= ack:
            seq, _ = ch.unacked.popitem(last=False)
            changed = self._changed_at.pop((peer, seq), None)
            if changed is not None:
                self.lag.append(now - changed)

    def _apply(self, sender: int, rtype: int, f: dict, now: float) -> None:
        table = self.table
        self.counters["records_applied"] += 1
        self.counters[f"received_{sp.RECORD_NAMES[rtype]}"] += 1
        if rtype == sp.R_ENTRY:
            owner = self.names.get(f["owner"], f"fw{f['owner']}")
            entry, _ = table.lookup(f["key"])
            if entry is not None and entry.orig != f["key"]:
                self.rejected["entry_key_clash"] += 1
                return
            if entry is None:
                entry = table.new_entry(f["key"], f["state"], now, owner, helper=f["helper"],
                                        related_to=f["master"])
            elif entry.owner == self.names[self.me] and owner != entry.owner:
                self.counters["ownership_conflicts"] += 1
                return
            entry.state, entry.owner = f["state"], owner
            entry.expires = now + f["timeout"]
        elif rtype == sp.R_ENTRY_DEL:
            entry, _ = table.lookup(f["key"])
            if entry is not None and entry.orig == f["key"] and \
                    entry.owner == self.names.get(f["owner"]):
                table.remove(entry)
        elif rtype == sp.R_EXPECT:
            if _find_expectation(table, f) is None:
                table.expect(Expectation(f["proto"], f["src"], f["dst"], f["dport"], f["master"],
                                         now, now + f["timeout"],
                                         self.names.get(f["owner"], f"fw{f['owner']}")))
        elif rtype == sp.R_EXPECT_DEL:
            exp = _find_expectation(table, f)
            if exp is not None:
                table.unexpect(exp)
        elif rtype == sp.R_COMMON:
            table.common[f["name"]] = CommonState(f["name"], f["value"],
                                                  self.names.get(f["owner"], f"fw{f['owner']}"))
        elif rtype == sp.R_BULK_REQUEST:
            if "state_requested" in self.config.triggers and self.ondemand_on:
                self.counters["trigger_state_requested"] += 1
                self._answer_bulk(sender, now)
            else:
                self.channels[sender].pending.append((sp.R_BULK_END, {"records": 0}))
        elif rtype == sp.R_BULK_START:
            self.bulk_started[sender] = now
        elif rtype == sp.R_BULK_END:
            self.bulk_waiting.discard(sender)
            started = self.bulk_started.pop(sender, None)
            if started is not None:
                self.counters["bulk_ms_last"] = round((now - started) * 1000, 3)
            self.counters["bulk_records_received"] += f["records"]

    # -- membership ----------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once every live peer answered the bulk request (or it timed out)."""
        return not (self.bulk_waiting & self.alive)

    def _heard(self, peer: int, now: float) -> None:
        self.last_heard[peer] = now
        self.heard_once.add(peer)
        if peer not in self.alive and not self.leaving:
            self.peer_joined(peer, now)

    def peer_failed(self, peer: int, now: float, trigger: str = "node_failed") -> None:
        """Method 700 for a failed or departed peer: adopt, re-replicate, regroup."""
        if peer not in self.alive or peer == self.me:
            return
        before = sorted(self.alive)
        self.alive.discard(peer)
        self.suspected[peer] = self.channels[peer].peer_boot
        for callback in self.on_peer_down:
            callback(peer)
        self.events.append((now, "peer_down", {"peer": self.names[peer], "why": trigger}))
        self.counters[f"peers_{'failed' if trigger == 'node_failed' else 'left'}"] += 1
        if trigger not in self.config.triggers or not self.ondemand_on:
            return
        self.counters[f"trigger_{trigger}"] += 1
        dead, me = self.names[peer], self.names[self.me]
        if adopter(before, self.config.k, peer, sorted(self.alive)) == self.me:
            adopted = [e for e in self.table.entries() if e.owner == dead]
            self.adopted[peer] = ({e.orig for e in adopted}, now)
            for entry in adopted:
                entry.owner = me
                entry.extra = {**(entry.extra or {}), "adopted_at": now}
            for entry in adopted:  # they are mine now: my backups must hold them too
                self._queue("update", entry, now)
            self.counters["entries_adopted"] += len(adopted)
            self.events.append((now, "adopted", {"peer": dead, "entries": len(adopted)}))
        self._regroup(before, now)

    def peer_joined(self, peer: int, now: float) -> None:
        """A new, restarted or wrongly suspected peer: regroup and bring it up to date.

        A restarted peer (new boot epoch) asks for its state itself. A peer that
        was only taken for dead (same boot: it kept its state) gets back the
        connections adopted from it, and what it missed meanwhile; this is how
        a split view heals.
        """
        before = sorted(self.alive)
        self.alive.add(peer)
        self.events.append((now, "peer_up", {"peer": self.names[peer]}))
        self.counters["peers_joined"] += 1
        kept_state = self.suspected.pop(peer, None) == self.channels[peer].peer_boot
        self._regroup(before, now)
        if kept_state:
            self._answer_bulk(peer, now)  # its connections back, and what it missed
        # A restarted peer asks for its state itself; _answer_bulk answers it.

    def _hand_back(self, peer: int, now: float) -> list[Entry]:
        """Return what was adopted from ``peer``; also what opened here since then.

        The controller gives ``peer`` its buckets back once it is ready, and which
        of the connections opened here meanwhile fall into those buckets only the
        switch's hash knows; so ``peer`` gets all of them (as copies of mine) and
        the adopted ones (its own again). Copies my backups made of the adopted
        ones are withdrawn.
        """
        keys, since = self.adopted.pop(peer, (set(), None))
        if since is None:
            return []
        me = self.names[self.me]
        mine = self.groups().get(self.me, []) if self.replication == "backup" else \
            [p for p in self.alive if p != self.me]
        out = []
        for key in keys:
            entry, _ = self.table.lookup(key)
            if entry is not None and entry.owner == me:
                entry.owner = self.names[peer]
                out.append(entry)
                for backup in mine:
                    if backup != peer:
                        self.channels[backup].pending.append(
                            (sp.R_ENTRY_DEL, {"key": key, "owner": self.me}))
        self.counters["entries_handed_back"] += len(out)
        opened = [e for e in self.table.entries() if e.owner == me and e.created >= since]
        self.counters["entries_opened_meanwhile_sent"] += len(opened)
        return out + opened

    def _regroup(self, before: list[int], now: float) -> None:
        """Send my entries to backups I did not have; drop copies I no longer keep."""
        if self.replication == "full" or self.config.selection == "connection":
            owned = [e for e in self.table.entries() if e.owner == self.names[self.me]]
            for entry in owned:
                self._queue("update", entry, now)
            return
        old = node_backups(before, self.config.k)
        new = node_backups(sorted(self.alive), self.config.k)
        gained = [p for p in new.get(self.me, []) if p not in old.get(self.me, [])]
        owned = [e for e in self.table.entries() if e.owner == self.names[self.me]]
        for entry in owned:
            self._queue("update", entry, now, peers=gained)
        keep = {self.names[o] for o, bs in new.items() if self.me in bs} | {self.names[self.me]}
        stale = [e for e in self.table.entries() if e.owner not in keep]
        for entry in stale:
            self.table.remove(entry)
        self.counters["entries_handed_on"] += len(owned) * len(gained)
        self.counters["copies_dropped"] += len(stale)

    def _answer_bulk(self, peer: int, now: float) -> None:
        """Common state and the entries ``peer`` must back up, then BULK_END."""
        me = self.names[self.me]
        sent = 0
        self.channels[peer].pending.append((sp.R_BULK_START, {}))
        for entry in self._hand_back(peer, now):
            self._queue("update", entry, now, peers=[peer])
            sent += 1
        for exps in list(self.table.expectations.values()):
            for exp in exps:
                if exp.owner == me:
                    self._queue("expect", exp, now, peers=[peer])
                    sent += 1
        for common in list(self.table.common.values()):
            if common.owner == me:
                self._queue("common", common, now, peers=[peer])
                sent += 1
        for entry in list(self.table.entries()):
            if entry.owner == me and peer in self._destinations(entry):
                self._queue("update", entry, now, peers=[peer])
                sent += 1
        self.channels[peer].pending.append((sp.R_BULK_END, {"records": sent}))
        self.counters["bulk_answers"] += 1
        self.counters["bulk_records_sent"] += sent

    def leave(self, now: float) -> None:
        """Graceful leave: hand over what is not yet sent, then say goodbye in heartbeats."""
        if self.dirty:
            self.periodic_sync(now)  # periodic mode: the backups must not miss the last changes
        self.leaving = True
        self.next_heartbeat = now

    def set_offline(self, offline: bool, now: float) -> None:
        """A data link went down (offline) or came back: peers treat it as a leave / a return."""
        if offline != self.leaving:
            self.leaving = offline
            self.next_heartbeat = now
            self.events.append((now, "offline" if offline else "online", {}))

    def _heartbeats(self, now: float) -> None:
        if now < self.next_heartbeat:
            return
        self.next_heartbeat = now + self.config.heartbeat
        view = [] if self.leaving else sorted(self.alive)
        for peer in self.channels:  # the dead too: so they can come back
            self._send(peer, sp.Message(sp.HEARTBEAT, self.me, peer, self.boot, members=view,
                                        ready=self.ready))
        if self.observer is not None:  # the steering controller
            self.outbox.append((0, sp.encode(sp.Message(sp.HEARTBEAT, self.me, 0, self.boot,
                                                        members=view, ready=self.ready), self.key)))
        for peer in list(self.alive - {self.me}):
            # A peer never heard may just not have started: fail it only after the grace.
            limit = self.config.dead_after if peer in self.heard_once else self.config.bulk_timeout
            if now - self.last_heard[peer] > limit:
                self.peer_failed(peer, now)
        if self.bulk_waiting and now >= self.bulk_deadline:
            self.counters["bulk_timeouts"] += 1
            self.bulk_waiting.clear()
        if not self.ready_logged and self.ready:  # method 700: it has its state (or gave up)
            self.ready_logged = True
            self.events.append((now, "ready", {
                "after_ms": round((now - self.started) * 1000, 3),
                "records": self.counters["bulk_records_received"],
                "timed_out": bool(self.counters["bulk_timeouts"])}))

    # -- observation ---------------------------------------------------------
    def stats(self, now: float | None = None) -> dict:
        """Counters for the inspection command. With ``now``, also how many of my entries
        are older than SETTLED (their copies should have reached the backups by then)."""
        me = self.names[self.me]
        mine = [e for e in self.table.entries() if e.owner == me]
        owned = len(mine)
        settled = owned if now is None else sum(1 for e in mine if now - e.created >= SETTLED)
        lag = percentiles(self.lag)
        backups = self.groups().get(self.me, [])
        carried = self.retired[0] + sum(sum(e.bytes) for e in mine)
        unprotected = self.retired[1] + sum(_unprotected(e) for e in mine)
        return {"mode": self.config.mode, "active": self.active, "replication": self.replication,
                "members": self.members, "alive": sorted(self.alive),
                "ready": self.ready,
                "backups": backups, "backup_nodes": [self.names[b] for b in backups],
                "backup_of": dict(Counter(e.owner for e in self.table.entries() if e.owner != me)),
                "entries_owned": owned, "entries_backup": len(self.table) - owned,
                "entries_owned_settled": settled,
                "common": self.table.n_expectations + len(self.table.common),
                "unacked": {self.names[p]: len(c.unacked) for p, c in self.channels.items()},
                "lag_ms_p50": lag.get("p50"), "lag_ms_p99": lag.get("p99"),
                "delayed": len(self.delayed), "bytes_carried": carried,
                "unprotected_bytes": unprotected,
                "counters": dict(self.counters), "rejected": dict(self.rejected)}


def _unprotected(entry: Entry) -> int:
    """Bytes ``entry`` carried before a replica of it left (all, if none did)."""
    total = sum(entry.bytes)
    return total if entry.replicated_at_bytes < 0 else min(total, entry.replicated_at_bytes)


def _identity(kind: str, obj: object) -> tuple:
    if isinstance(obj, Entry):
        return ("entry", obj.orig)
    if isinstance(obj, CommonState):
        return ("common", obj.name)
    return ("expect", obj.proto, obj.src, obj.dst, obj.dport)


def _find_expectation(table: ConnectionTable, f: dict) -> Expectation | None:
    for exp in table.expectations.get((f["proto"], f["dst"], f["dport"]), []):
        if exp.src == f["src"]:
            return exp
    return None
