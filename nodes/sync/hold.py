"""Holding a packet until the state it creates has reached the other nodes (method 800).

Protocol-specific code (the FTP helper) that sees a packet announce a
connection through another node asks for the new state to be sent now
(``request_sync``) and for the packet to be held (the gateway engine's
``request_delay``). The ticket returned here is ``done`` once every live
member that must know has acknowledged the message carrying the state; the
gateway engine releases the held packets then, or at ``hold_timeout``.

A request is itself an on-demand sync (whatever the trigger settings: the
protocol code asked for it); in periodic mode it waits for the next round and
nothing is held, since nothing would be acknowledged sooner.

A mixin of ``SyncEngine`` (nodes/sync/__init__.py), which holds the state.
"""
from __future__ import annotations

from nodes.sync.channel import LATER
from nodes.sync.replication import _identity


class Hold:
    """Sync requests from protocol code, and the tickets a held packet waits on."""

    def request_sync(self, reason: str, objs: list, now: float) -> dict | None:
        """Send ``objs`` now, ahead of any backlog, to the nodes that must know them; a
        ticket (per peer, the message that carries them), or None (no hold)."""
        self.counters[f"sync_requests_{reason}"] += 1
        if not self.ondemand_on:
            self.counters["sync_requests_left_to_periodic"] += 1
            return None
        for obj in objs:
            kind = "expect" if hasattr(obj, "master") else "update"
            self._unqueue_last(kind, obj)  # its trigger's record, if it is the last queued
            self._queue(kind, obj, now, urgent=True)
            self.dirty.pop(_identity(obj), None)  # synchronized now, not again next round
        sealed = {p: ch.next_seq for p, ch in self.channels.items()}
        self.flush(now, budget=0)  # the urgent records only: what waits stays waiting
        ticket = {p: ch.next_seq - 1 for p, ch in self.channels.items()
                  if ch.next_seq > sealed[p]}
        return ticket if self.config.hold else None

    def _unqueue_last(self, kind: str, obj: object) -> None:
        """Take back the record of ``obj`` that its trigger has just queued (the last in
        a peer's queue), so that it leaves once, urgently. One further back stays: it
        goes twice, and the later copy carries the same or a newer state."""
        for peer in self._destinations(obj):
            pending = self.channels[peer].pending
            if pending and pending[-1][0] is LATER and pending[-1][1][1] is obj \
                    and pending[-1][1][0] == kind:
                pending.pop()
                self.counters["records_queued"] -= 1

    def done(self, ticket: dict, now: float) -> bool:
        """True once every live peer of ``ticket`` acknowledged its message."""
        return all(self.channels[p].acked >= seq or p not in self.alive
                   for p, seq in ticket.items())

