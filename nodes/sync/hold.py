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
        """Send ``objs`` to the nodes that must know them now; a ticket, or None (no hold)."""
        self.counters[f"sync_requests_{reason}"] += 1
        if not self.ondemand_on:
            self.counters["sync_requests_left_to_periodic"] += 1
            return None
        for obj in objs:  # queued by its trigger already, unless that trigger is off
            kind = "expect" if hasattr(obj, "master") else "update"
            if not self._queued_for(obj):
                self._queue(kind, obj, now)
            self.dirty.pop(_identity(obj), None)  # synchronized now, not again next round
        self.flush(now, budget=None)  # the ticket below must name the message carrying it
        ticket = {}
        for obj in objs:
            for peer in self._destinations(obj):
                ch = self.channels[peer]
                if ch.unacked:
                    ticket[peer] = next(reversed(ch.unacked))  # the message carrying it
        return ticket if self.config.hold else None

    def _queued_for(self, obj: object) -> bool:
        """True if a record of ``obj`` waits in a channel (its trigger queued it)."""
        kind = "expect" if hasattr(obj, "master") else "update"
        return any(r[0] is LATER and r[1][1] is obj and r[1][0] == kind
                   for p in self._destinations(obj) for r in self.channels[p].pending)

    def done(self, ticket: dict, now: float) -> bool:
        """True once every live peer of ``ticket`` acknowledged its message."""
        return all(self.channels[p].acked >= seq or p not in self.alive
                   for p, seq in ticket.items())

