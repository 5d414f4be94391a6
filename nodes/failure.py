"""Failure detection from heartbeats: one judge for the nodes and the controller.

Every node sends a heartbeat every ``heartbeat`` seconds to every peer and to
the steering controller (nodes/syncproto.py). Both sides feed each arrival to
a ``FailureDetector`` and ask it, after they have read every heartbeat that
has arrived, which members have been silent too long. The rules, the same
everywhere:

- a member not heard for ``dead_after`` seconds has failed;
- a member never heard is given ``startup_grace`` seconds from the start;
- a heartbeat whose member list leaves out its sender is a graceful leave;
- a heartbeat from an older boot of its sender than one already heard is
  stale (a replay or a delayed datagram) and changes nothing.

Pure: time comes in as ``now``.
"""
from __future__ import annotations

ALIVE, LEAVE, STALE, RESTART = "alive", "leave", "stale", "restart"


class FailureDetector:
    """Last arrival and boot epoch of each member; verdicts on silence."""

    def __init__(self, members, dead_after: float, startup_grace: float, now: float):
        self.dead_after, self.startup_grace = dead_after, startup_grace
        self.started = now
        self.last_heard = {m: now for m in members}
        self.boots: dict = {}  # member -> boot epoch of its latest heartbeat

    def heard(self, member, boot: int, view, now: float) -> str:
        """One heartbeat from ``member`` (its boot epoch and its view of the members).

        Returns ALIVE, LEAVE (a goodbye), STALE (an older boot: ignored) or
        RESTART (a newer boot than before: the member restarted)."""
        known = self.boots.get(member)
        if known is not None and boot < known:
            return STALE
        self.boots[member] = boot
        self.last_heard[member] = now
        if member not in view:
            return LEAVE
        return RESTART if known is not None and boot > known else ALIVE

    def heard_once(self, member) -> bool:
        return member in self.boots

    def limit(self, member) -> float:
        """How long ``member`` may be silent: dead_after once heard, else the start-up grace."""
        return self.dead_after if member in self.boots else self.startup_grace

    def silent(self, members, now: float) -> list[tuple[object, float]]:
        """(member, seconds silent) for each of ``members`` silent beyond its limit."""
        out = []
        for member in members:
            quiet = now - self.last_heard.get(member, self.started)
            if quiet > self.limit(member):
                out.append((member, quiet))
        return out

    def forget(self, member, now: float) -> None:
        """Start ``member``'s clock again (it left; its next heartbeat is a return)."""
        self.last_heard[member] = now
