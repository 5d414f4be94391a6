"""Nodes failing, leaving and joining (the seed's method 700) and backup groups (600).

- Heartbeats every ``heartbeat`` seconds to every peer (and the controller);
  the FailureDetector (nodes/failure.py) judges silence and goodbyes, with
  the same rules as the controller. One rule is the nodes' own: a node that
  was itself away for half of ``dead_after`` or more (a long call, a starved
  CPU) puts off its next judgement once, until it has read what arrived
  meanwhile (its reads are cut into slices; the controller reads everything
  before it judges, and does no long work).
- A failed or departed peer: its first live backup adopts its connections
  (``adopter``); with per-connection backups, the other nodes that hold
  copies of its connections send them to the adopter; every node sends its
  own entries to backups it did not have before, so no node is left without
  one, and drops copies it no longer keeps (regroup).
- A new or restarted node asks every peer for its state (BULK_REQUEST) and is
  ``ready`` once each has answered with common state and the entries the
  newcomer must back up (BULK_START ... BULK_END), or after ``bulk_timeout``.
- A peer only taken for dead (same boot epoch) gets back what was adopted
  from it, and what opened here meanwhile: how a split view heals.

A mixin of ``SyncEngine`` (nodes/sync/__init__.py), which holds the state.
"""
from __future__ import annotations

from operator import attrgetter
from types import MappingProxyType

from nodes import syncproto as sp
from nodes.conntrack import Entry
from nodes.groups import adopter, connection_backups, node_backups

_ORIG = attrgetter("orig")


class Membership:
    """Heartbeats, failure and join handling, regrouping and bulk transfers."""

    # -- backup groups ---------------------------------------------------------
    def groups(self) -> dict[int, list[int]]:
        """Backup groups of the live members (cached until membership changes)."""
        live = tuple(sorted(self.alive))
        if self._groups[0] != live:
            self._groups = (live, node_backups(list(live), self.config.k))
        return self._groups[1]

    @property
    def ready(self) -> bool:
        """True once every live peer answered the bulk request (or it timed out)."""
        return not (self.bulk_waiting & self.alive)

    # -- heartbeats ------------------------------------------------------------
    def _heartbeats(self, now: float) -> None:
        # This node's own pauses (a long call, a starved CPU): while it was away it heard
        # nobody, so silence it measures right after may be its own (Cassandra's rule:
        # do not mark peers down after a local pause).
        self.paused = max(self.paused, now - self.last_tick)
        self.last_tick = now
        if now < self.next_heartbeat:
            return
        self.next_heartbeat = now + self.config.heartbeat
        view = [] if self.leaving else sorted(self.alive)
        for peer in self.channels:  # the dead too: so they can come back
            seq, to_boot = self.stamp(peer)
            self._send(peer, sp.Message(sp.HEARTBEAT, self.me, peer, self.boot, seq,
                                        members=view, ready=self.ready, to_boot=to_boot))
        if self.observer:  # the steering controller (not counted: it is no cluster peer)
            seq, _ = self.stamp(0)
            self.outbox.append((0, sp.encode(sp.Message(sp.HEARTBEAT, self.me, 0, self.boot, seq,
                                                        members=view, ready=self.ready),
                                             self.key)))
        self._judge(now)
        if self.bulk_waiting and now >= self.bulk_deadline:
            self.counters["bulk_timeouts"] += 1
            self.bulk_waiting.clear()
        if not self.ready_logged and self.ready:  # method 700: it has its state (or gave up)
            self.ready_logged = True
            self.events.append((now, "ready", {
                "after_ms": round((now - self.started) * 1000, 3),
                "records": self.counters["bulk_records_received"],
                "timed_out": bool(self.counters["bulk_timeouts"])}))

    def _judge(self, now: float) -> None:
        """Take peers silent beyond their limit for failed."""
        # Messages still waiting unread (the shell's read was cut short) may hold the
        # heartbeats: judge on them first, up to one more dead_after.
        grace = self.config.dead_after if self.unread else 0.0
        away, self.paused = self.paused, 0.0
        failed = self.detector.judge(sorted(self.alive - {self.me}), now, away, grace)
        if failed is None:  # away too long to judge now (nodes.failure.FailureDetector.judge)
            self.counters["judgements_deferred"] += 1
            return
        for peer, quiet in failed:
            self.peer_failed(peer, now, silent=quiet, away=away)

    def _heard(self, peer: int, now: float) -> None:
        """Any authenticated message from ``peer``: it lives (and may be back)."""
        if peer not in self.alive and not self.leaving:
            self.peer_joined(peer, now)

    # -- a peer fails or leaves ------------------------------------------------
    def peer_failed(self, peer: int, now: float, trigger: str = "node_failed",
                    silent: float | None = None, away: float | None = None,
                    announced: bool = False) -> None:
        """Method 700 for a failed or departed peer: adopt, re-replicate, regroup.
        ``announced``: its death notice said so (not its silence)."""
        if peer not in self.alive or peer == self.me:
            return
        before = sorted(self.alive)
        self.alive.discard(peer)
        self.suspected[peer] = self.channels[peer].peer_boot
        for callback in self.on_peer_down:
            callback(peer)
        fields = {"peer": self.names[peer], "why": trigger}
        if silent is not None:  # how long it was quiet, and how long this node was away
            fields.update(silent_ms=round(silent * 1000, 1), away_ms=round(away * 1000, 1))
        if announced:
            fields["announced"] = True
        self.events.append((now, "peer_down", fields))
        self.counters[f"peers_{'failed' if trigger == 'node_failed' else 'left'}"] += 1
        if trigger not in self.config.triggers or not self.ondemand_on:
            return
        self.counters[f"trigger_{trigger}"] += 1
        dead = self.names[peer]
        heir = adopter(before, self.config.k, peer, sorted(self.alive))
        copies = [e for e in self.table.entries() if e.owner == dead]
        if heir == self.me:
            self.adopted[peer] = (set(), now)
            self._adopt(copies, peer, now)
            self.events.append((now, "adopted", {"peer": dead, "entries": len(copies)}))
        elif heir is not None and self.config.selection == "connection" \
                and self.replication == "backup":
            # Per-connection backups: the heir holds only part of the dead node's
            # connections; the rest are here, and the heir must carry them.
            for entry in copies:
                self._queue("update", entry, now, peers=[heir])
            self.counters["copies_sent_to_adopter"] += len(copies)
        self._regroup(before, now)

    def _adopt(self, entries: list[Entry], peer: int, now: float) -> None:
        """Take over ``entries`` of the failed ``peer``: mine now, and my backups'."""
        me = self.name
        keys, _ = self.adopted[peer]
        self.table.hand_over(entries, self.names[peer], me)
        # The engine reports each one's first packet here, then drops the mark. One
        # read-only mark for all: a dict an entry cost the heir of 200k 40 ms at once.
        stamp = MappingProxyType({"adopted_at": now})
        for entry in entries:
            entry.extra = stamp if entry.extra is None else {**entry.extra, "adopted_at": now}
        keys.update(map(_ORIG, entries))
        self._queue_mine(entries, now)
        self.counters["entries_adopted"] += len(entries)

    def _regroup(self, before: list[int], now: float, joining: int | None = None) -> None:
        """Send my entries to backups I did not have; drop copies I no longer keep.
        ``joining``: a peer that joins, brought up to date by a bulk answer (the one it
        asks for, or ``peer_joined``'s), not by these: sent both ways, a node with 200k
        connections sent a restarted peer 400k records, and the peer, busy with them,
        took it for dead."""
        me = self.name
        if self.replication == "full" and joining is not None:
            return  # the others hold all of mine already
        owned = [e for e in self.table.entries() if e.owner == me]
        if self.replication == "full":
            self._queue_mine(owned, now)
            return
        if self.config.selection == "connection":
            for entry in owned:
                peers = [p for p in self._destinations(entry) if p != joining]
                self._queue("update", entry, now, peers=peers)
            live = sorted(self.alive)
            ids = {self.names[m]: m for m in live}
            stale = [e for e in self.table.entries() if e.owner != me and (
                e.owner not in ids or self.me not in connection_backups(
                    e.orig, ids[e.owner], live, self.config.k))]
        else:
            old = node_backups(before, self.config.k)
            new = node_backups(sorted(self.alive), self.config.k)
            gained = [p for p in new.get(self.me, [])
                      if p not in old.get(self.me, []) and p != joining]
            self._queue_mine(owned, now, gained)
            self.counters["entries_handed_on"] += len(owned) * len(gained)
            keep = {self.names[o] for o, bs in new.items() if self.me in bs} | {me}
            stale = [e for e in self.table.entries() if e.owner not in keep]
        for entry in stale:
            self.table.remove(entry)
        self.counters["copies_dropped"] += len(stale)

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

    # -- a peer joins or comes back --------------------------------------------
    def peer_joined(self, peer: int, now: float) -> None:
        """A new, restarted or wrongly suspected peer: regroup and bring it up to date.

        A restarted peer (new boot epoch) asks for its state itself. A peer that
        was only taken for dead (same boot: it kept its state) gets back the
        connections adopted from it, and what it missed meanwhile.
        """
        before = sorted(self.alive)
        self.alive.add(peer)
        self.events.append((now, "peer_up", {"peer": self.names[peer]}))
        self.counters["peers_joined"] += 1
        kept_state = self.suspected.pop(peer, None) == self.channels[peer].peer_boot
        self._regroup(before, now, joining=peer)
        if kept_state:
            self._answer_bulk(peer, now)  # its connections back, and what it missed

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
        me = self.name
        mine = self.groups().get(self.me, []) if self.replication == "backup" else \
            [p for p in self.alive if p != self.me]
        out = []
        for key in keys:
            entry, _ = self.table.lookup(key)
            if entry is not None and entry.owner == me:
                self.table.set_owner(entry, self.names[peer])
                out.append(entry)
                keep = set(self._destinations(entry))  # who backs up ``peer`` for it
                for backup in mine:
                    if backup == peer:
                        continue
                    if backup in keep:  # a backup of both: its copy is peer's again
                        self._queue("update", entry, now, peers=[backup])
                    else:
                        self.channels[backup].pending.append(
                            (sp.R_ENTRY_DEL, {"key": key, "owner": self.me}))
        self.counters["entries_handed_back"] += len(out)
        opened = [e for e in self.table.entries() if e.owner == me and e.created >= since]
        self.counters["entries_opened_meanwhile_sent"] += len(opened)
        return out + opened

    def _answer_bulk(self, peer: int, now: float) -> None:
        """Common state and the entries ``peer`` must back up, then BULK_END."""
        me = self.name
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
        mine = [e for e in self.table.entries() if e.owner == me]
        common = self._owner_destinations(self.me)  # None: each entry has its own
        if common is None:
            mine = [e for e in mine if peer in self._destinations(e)]
        elif peer not in common:
            mine = []
        self._queue_to("update", mine, now, peer)
        sent += len(mine)
        self.channels[peer].pending.append((sp.R_BULK_END, {"records": sent}))
        self.counters["bulk_answers"] += 1
        self.counters["bulk_records_sent"] += sent

    def _apply_bulk(self, sender: int, rtype: int, f: dict, now: float) -> None:
        """The bulk transfer's records: a request to answer, its start and its end."""
        if rtype == sp.R_BULK_REQUEST:
            boot = self.channels[sender].peer_boot
            if self.bulk_answered.get(sender) == boot:
                # a node asks once per incarnation; more is an amplification attack
                self.rejected["bulk_request_repeated"] += 1
                return
            self.bulk_answered[sender] = boot
            if "state_requested" in self.config.triggers and self.ondemand_on:
                self.counters["trigger_state_requested"] += 1
                self._answer_bulk(sender, now)
            else:
                self.channels[sender].pending.append((sp.R_BULK_END, {"records": 0}))
        elif rtype == sp.R_BULK_START:
            self.bulk_started[sender] = now
            self.bulk_counts[sender] = 0  # Replication._apply counts what follows
        elif rtype == sp.R_BULK_END:
            self.bulk_waiting.discard(sender)
            started = self.bulk_started.pop(sender, None)
            if started is not None:
                self.bulk_ms_last = round((now - started) * 1000, 3)
            # What arrived between BULK_START and this (other changes too, so a shortfall
            # is certain, a surplus is not): records the sender had to drop (its queue to
            # this node overflowed), or a lost start, leave state behind; say so.
            got = min(max(0, self.bulk_counts.pop(sender, 0) - 1), f["records"])  # not END
            self.counters["bulk_records_received"] += got
            if got < f["records"] or started is None:
                self.counters["bulk_incomplete"] += 1
                self.counters["bulk_records_missing"] += f["records"] - got
                self.events.append((now, "bulk_incomplete", {
                    "peer": self.names[sender], "records": f["records"], "received": got}))
