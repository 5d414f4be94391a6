"""What state goes where, and when (the seed's methods 400, 500 and 600's destinations).

- On demand (method 400): each predetermined action the gateway engine
  reports (``state_changed``) is sent at once if its trigger is on.
- Periodic (prior art): every ``interval``, what changed (differential) or all
  this node owns (full).
- Combined (method 500): both; an on-demand sync resets the periodic timer,
  so the interval can be longer. Auto: switch between them by the sync
  bandwidth, and between full and backup replication by table size.
- Delayed replication (Check Point's and FortiGate's delayed sync; Feng et
  al., GLOBECOM 2008): with ``delay = D`` a new connection is sent once it is
  D seconds old, never if it closed before.
- Destinations (method 600): connection entries to the owner's backup nodes
  (or every member with ``replication = "full"``); expectations and common
  state (any node may need them) to every member.
- Records: what an entry, expectation or common state is on the wire, and
  how a received record is applied to the connection table.

A mixin of ``SyncEngine`` (nodes/sync/__init__.py), which holds the state.
"""
from __future__ import annotations

from nodes import syncproto as sp
from nodes.conntrack import (CLOSE, REPLY, TIME_WAIT, CommonState, ConnectionTable, Entry,
                             Expectation)
from nodes.tcpwindow import BE_LIBERAL, MAX_WSCALE, SACK_PERM, WINDOW_SCALE, Seen
from nodes.groups import connection_backups
from nodes.sync.channel import LATER, MANY

KEPT = WINDOW_SCALE | SACK_PERM | BE_LIBERAL  # a direction's flags that outlive its window
CLOSED = (TIME_WAIT, CLOSE)  # a connection over: nothing left to protect
# Which predetermined action a state change of the gateway engine is.
TRIGGER_OF = {"new": "new_connection", "update": "state_modified",
              "destroy": "state_modified", "expect": "state_modified", "common": "state_modified",
              "unexpect": "state_modified", "multi_node": "multi_node_session"}
TRIGGER_COUNTER = {t: f"trigger_{t}" for t in set(TRIGGER_OF.values())}


class Replication:
    """Triggers, periodic rounds, delayed replication, destinations and records."""

    @property
    def periodic_on(self) -> bool:
        return self.active in ("periodic", "combined")

    @property
    def ondemand_on(self) -> bool:
        return self.active in ("ondemand", "combined")

    # -- the SyncPort the gateway engine calls ---------------------------------
    def state_changed(self, kind: str, obj: object, now: float) -> None:
        """A predetermined action: record it, and sync now if its trigger is on."""
        if self.stateless:
            return
        if self.config.mode == "auto":
            self._window = (self._window[0], self._window[1] + 1)
        if self.periodic_on and kind != "multi_node":
            self.dirty[_identity(obj)] = (kind, obj)
        trigger = TRIGGER_OF.get(kind)
        if kind == "destroy" and isinstance(obj, Entry):
            self._retire(obj)
        if isinstance(obj, Entry) and self._delaying(kind, obj):
            return
        if self.ondemand_on and trigger in self.config.triggers:
            self._queue(kind, obj, now)
            self.counters[TRIGGER_COUNTER[trigger]] += 1
            if self.active == "combined":
                # synchronized now: the next round carries only what no trigger sent
                self.dirty.pop(_identity(obj), None)
                self.next_periodic = now + self.config.interval

    # -- TCP windows (nodes/tcpwindow.py) ------------------------------------------
    def _wants_windows(self) -> bool:
        """Whether the gateway engine is to report window moves (``window_changed``)."""
        if self.stateless:
            return False
        return self.config.window_sync == "change" or (
            self.config.window_sync == "schedule" and self.config.mode != "ondemand")

    def window_changed(self, entry: Entry) -> None:
        """The window of my connection ``entry`` moved: sent at the next flush ("change"),
        or with the next periodic round ("schedule")."""
        if entry.orig in self.delayed:
            return  # not replicated yet: it goes whole when due
        if self.config.window_sync == "change":
            self.windows[entry.orig] = entry
        elif self.periodic_on:
            self.dirty.setdefault(_identity(entry), ("update", entry))

    def _send_windows(self, now: float) -> None:
        """One record for each of my connections whose window moved since the last flush."""
        windows, self.windows = self.windows, {}
        for entry in windows.values():
            if entry.owner == self.name and self.table.lookup(entry.orig)[0] is entry:
                self._queue("update", entry, now)
                self.counters["window_updates"] += 1

    # -- periodic and combined ---------------------------------------------------
    def periodic_sync(self, now: float) -> None:
        """Send what changed (differential) or everything this node owns (full)."""
        self.next_periodic = now + self.config.interval
        self.counters["periodic_syncs"] += 1
        queued = self.counters["records_queued"]
        me = self.name
        if self.config.periodic == "full":
            for entry in self.table.entries():
                if entry.owner == me:
                    self._queue("update", entry, now)
            for exps in self.table.expectations.values():
                for exp in exps:
                    if exp.owner == me:
                        self._queue("expect", exp, now)
            for common in self.table.common.values():
                if common.owner == me:
                    self._queue("common", common, now)
        else:
            for kind, obj in self.dirty.values():
                self._queue(kind, obj, now)
        self.dirty.clear()
        self.counters["records_queued_periodic"] += self.counters["records_queued"] - queued

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

    # -- delayed replication -----------------------------------------------------
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
        if entry.owner == self.name:
            self.retired[0] += sum(entry.bytes)
            self.retired[1] += unprotected(entry)

    # -- destinations and records --------------------------------------------------
    def _owner_destinations(self, owner: int) -> list[int] | None:
        """Where every entry of ``owner`` goes, when that does not depend on the entry
        (None: connection-specific backups, chosen by each connection's key)."""
        if self.replication != "backup":
            return [p for p in sorted(self.alive) if p != self.me]
        if self.config.selection == "connection":
            return None
        return [p for p in self.groups().get(owner, []) if p != self.me]

    def _destinations(self, obj: object) -> list[int]:
        if not isinstance(obj, Entry):
            return [p for p in sorted(self.alive) if p != self.me]
        owner = self.ids.get(obj.owner, self.me)
        peers = self._owner_destinations(owner)
        if peers is None:
            peers = [p for p in connection_backups(obj.orig, owner,
                                                   sorted(self.alive), self.config.k)
                     if p != self.me]
        return peers

    def _record(self, kind: str, obj: object, now: float) -> tuple[int, bytes]:
        """The wire record of ``obj`` as it is at ``now`` (made when packed): its type
        and its bytes."""
        if isinstance(obj, Entry):
            owner = self.ids.get(obj.owner, self.me)
            if kind == "destroy":
                rtype, fields = sp.R_ENTRY_DEL, {"key": obj.orig, "owner": owner}
            else:
                window = scales = None
                if obj.window is not None and self.config.window_sync != "off":
                    window, scales = self._window_fields(obj)
                ttl = obj.expires - now
                return sp.R_ENTRY, sp.encode_entry(obj.orig, obj.state, owner,
                                                   ttl if ttl > 0.0 else 0.0, obj.helper,
                                                   obj.related_to, window, scales)
        elif isinstance(obj, CommonState):
            rtype, fields = sp.R_COMMON, {"owner": self.ids.get(obj.owner, self.me),
                                          "name": obj.name, "value": obj.value}
        else:
            fields = {"proto": obj.proto, "src": obj.src, "dst": obj.dst, "dport": obj.dport,
                      "owner": self.ids.get(obj.owner, self.me)}
            if kind == "unexpect":
                rtype = sp.R_EXPECT_DEL
            else:
                rtype = sp.R_EXPECT
                fields.update(timeout=max(0.0, obj.expires - now), master=obj.master)
        return rtype, sp.encode_record(rtype, fields)

    def _window_fields(self, entry: Entry) -> tuple:
        """(window, scales): what of ``entry``'s TCP window its record carries, as
        window_sync says ("change", "schedule" or "scale")."""
        window = entry.window
        if self.config.window_sync == "scale":
            return None, (window[0].scale, window[0].flags & KEPT, window[1].scale,
                          window[1].flags & KEPT)
        if entry.fast:  # the kernel forwards it unchecked: what is known goes stale, so
            # the copy learns the window from the segments it sees (maxwin 0), liberally
            # as the owner does (nodes.fastpath.fixup)
            return tuple(v for s in window for v in
                         (s.end, s.maxend, 0, s.scale, s.flags | BE_LIBERAL)), None
        return window[0].fields() + window[1].fields(), None

    def _queue(self, kind: str, obj: object, now: float, peers: list[int] | None = None,
               urgent: bool = False) -> None:
        """A record of ``obj`` to ``peers`` (default: its destinations), made when packed;
        ``urgent``: before what waits (nodes/sync/channel.py's two lanes)."""
        record = (LATER, (kind, obj, now))  # now: when its lag starts
        if kind == "update" and self.windows:
            self.windows.pop(obj.orig, None)  # the record will carry the window, when packed
        peers = self._destinations(obj) if peers is None else peers
        self.counters["records_queued"] += len(peers)
        for peer in peers:
            ch = self.channels[peer]
            (ch.urgent if urgent else ch.pending).append(record)
        if peers and isinstance(obj, Entry) and obj.replicated_at_bytes < 0:
            obj.replicated_at_bytes = sum(obj.bytes)

    def _queue_to(self, kind: str, entries: list[Entry], now: float, peer: int) -> None:
        """Records of ``entries`` to ``peer`` alone (a bulk answer: a million of them),
        as ``_queue`` makes one, queued as one run: an item a record (two tuples each)
        took a node with 200k connections 140 ms of its garbage collector's time, past
        its peers' dead_after, while the peer that had asked waited for it."""
        if kind == "update" and self.windows:
            for entry in entries:
                self.windows.pop(entry.orig, None)
        if entries:
            self.channels[peer].pending.append((MANY, [kind, entries, now, 0]))
        for entry in entries:
            if entry.replicated_at_bytes < 0:
                entry.replicated_at_bytes = entry.bytes_orig + entry.bytes_reply
        self.counters["records_queued"] += len(entries)

    def _queue_mine(self, entries: list[Entry], now: float,
                    peers: list[int] | None = None) -> None:
        """Records of my ``entries`` (a list not changed afterwards) to ``peers``
        (default: where mine go): one run a peer where that does not depend on the
        connection, else one record at a time. A failover adopts, and a regroup sends
        on, a table's worth at once: an item a record held the heir of 100k
        connections for 300 ms, past its peers' dead_after."""
        if peers is None:
            peers = self._owner_destinations(self.me)
            if peers is None:  # connection-specific backups
                for entry in entries:
                    self._queue("update", entry, now)
                return
        for peer in peers:
            self._queue_to("update", entries, now, peer)

    def _owner_name(self, owner_id: int) -> str:
        """The name of node ``owner_id`` (its default made only when needed: a bulk
        transfer asks a million times)."""
        name = self.names.get(owner_id)
        return f"fw{owner_id}" if name is None else name

    def _apply_all(self, sender: int, records: list, now: float) -> None:
        """Apply records received in order from ``sender``, as ``_apply`` applies each.
        Connections' records, most of every message and all of a bulk transfer's, are
        counted once a run: three counters a record were a fifth of applying one."""
        entries = 0
        for rtype, f in records:
            if rtype == sp.R_ENTRY:
                self._apply_entry(f, now)
                entries += 1
                continue
            if entries:  # counted before what follows them (a BULK_END counts them)
                self._count(sender, sp.R_ENTRY, entries)
                entries = 0
            self._apply(sender, rtype, f, now)
        if entries:
            self._count(sender, sp.R_ENTRY, entries)

    def _count(self, sender: int, rtype: int, n: int) -> None:
        """``n`` records of ``rtype`` from ``sender`` applied."""
        self.counters["records_applied"] += n
        if sender in self.bulk_counts:  # a bulk transfer from it is under way
            self.bulk_counts[sender] += n
        self.counters[sp.RECEIVED[rtype]] += n

    def _apply(self, sender: int, rtype: int, f: dict, now: float) -> None:
        """Apply one record received in order from ``sender`` to the connection table."""
        table = self.table
        self._count(sender, rtype, 1)
        if rtype == sp.R_ENTRY:
            self._apply_entry(f, now)
        elif rtype == sp.R_ENTRY_DEL:
            entry, _ = table.lookup(f["key"])
            if entry is not None and entry.orig == f["key"] and \
                    entry.owner == self.names.get(f["owner"]):
                table.remove(entry)
        elif rtype == sp.R_EXPECT:
            if self._tombstone(f, now, check=True):
                # its deletion came first (from the node that consumed it, overtaking a
                # retransmission of this): applying it now would bring it back to life
                self.rejected["expectation_already_deleted"] += 1
            elif table.expectations_full():
                self.rejected["expectation_table_full"] += 1
            elif find_expectation(table, f) is None:
                table.expect(Expectation(f["proto"], f["src"], f["dst"], f["dport"], f["master"],
                                         now, now + f["timeout"], self._owner_name(f["owner"])))
        elif rtype == sp.R_EXPECT_DEL:
            exp = find_expectation(table, f)
            if exp is not None:
                table.unexpect(exp)
            else:
                self._tombstone(f, now)
        elif rtype == sp.R_COMMON:
            table.common[f["name"]] = CommonState(f["name"], f["value"],
                                                  self._owner_name(f["owner"]))
        else:
            self._apply_bulk(sender, rtype, f, now)  # membership: nodes/sync/membership.py

    def _tombstone(self, f: dict, now: float, check: bool = False) -> bool:
        """Remember a deletion of an expectation not held here; with ``check``, say whether
        one is remembered for it (and forget it: it has served)."""
        tombs = self.tombstones
        while tombs and (next(iter(tombs.values())) <= now or len(tombs) > TOMBSTONES):
            tombs.popitem(last=False)
        key = _tomb_key(f)
        if check:
            return tombs.pop(key, None) is not None
        tombs[key] = now + TOMBSTONE_TTL
        return False

    def _apply_entry(self, f: dict, now: float) -> None:
        table, key = self.table, f["key"]
        owner = self._owner_name(f["owner"])
        entry, direction = table.lookup(key)
        if direction == REPLY:  # held, the other way round
            self.rejected["entry_key_clash"] += 1
            return
        if entry is None:
            if table.full() and table.early_drop(spare_owner=self.name) is None:
                self.rejected["table_full"] += 1  # copies count against the cap too
                return
            # a new copy is made as the record says (a bulk transfer makes a million)
            entry = table.new_entry(key, f["state"], now, owner, now + f["timeout"], 0,
                                    f["helper"], f["master"])
            if "window" in f or "scales" in f:
                _apply_window(entry, f)
        elif entry.owner == self.name and owner != entry.owner:
            self.counters["ownership_conflicts"] += 1
            return
        else:
            entry.state = f["state"]
            _apply_window(entry, f)
            table.set_owner(entry, owner)
            entry.expires = now + f["timeout"]
            table.state_changed(entry, now)
        if f["owner"] in self.adopted and f["owner"] not in self.alive:
            # a copy of a dead owner's connection that another backup held: mine to adopt
            self._adopt([entry], f["owner"], now)


def _apply_window(entry: Entry, f: dict) -> None:
    """A copy takes the window its record carries: all of it; only the scales (the
    copy learns the rest from the segments it sees, as Linux does for an entry that
    conntrackd committed); or nothing (the copy is not window-checked)."""
    # A scale above RFC 7323's 14 is taken as 14, as Linux takes a SYN's (the window
    # check's fast path relies on it: a scaled window stays below 2**30).
    if f.get("window"):
        w = f["window"]
        entry.window = [Seen(*w[:3], min(w[3], MAX_WSCALE), w[4]),
                        Seen(*w[5:8], min(w[8], MAX_WSCALE), w[9])]
    elif f.get("scales"):
        if entry.window is None:
            entry.window = [Seen(), Seen()]
        for seen, scale, flags in zip(entry.window, f["scales"][0::2], f["scales"][1::2]):
            if seen.maxwin == 0:  # not learnt here yet
                seen.scale, seen.flags = min(scale, MAX_WSCALE), flags


TOMBSTONES = 4096  # deletions of expectations not (yet) held, remembered
TOMBSTONE_TTL = 30.0  # seconds: longer than any retransmission of the expectation


def _tomb_key(f: dict) -> tuple:
    return (f["proto"], f["src"], f["dst"], f["dport"])


def unprotected(entry: Entry) -> int:
    """Bytes ``entry`` carried before a replica of it left (all, if none did)."""
    total = sum(entry.bytes)
    return total if entry.replicated_at_bytes < 0 else min(total, entry.replicated_at_bytes)


def _identity(obj: object) -> tuple:
    if isinstance(obj, Entry):
        return ("entry", obj.orig)
    if isinstance(obj, CommonState):
        return ("common", obj.name)
    return ("expect", obj.proto, obj.src, obj.dst, obj.dport)


def find_expectation(table: ConnectionTable, f: dict) -> Expectation | None:
    for exp in table.expectations.get((f["proto"], f["dst"], f["dport"]), []):
        if exp.src == f["src"]:
            return exp
    return None
