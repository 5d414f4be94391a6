"""Failure detection from heartbeats: one judge for the nodes and the controller.

Every node sends a heartbeat every ``heartbeat`` seconds to every peer and to
the steering controller (nodes/syncproto.py). Both sides feed each arrival to
a ``FailureDetector`` and ask it, after they have read every heartbeat that
has arrived, which members have been silent too long. The rules, the same
everywhere:

- a member not heard for ``dead_after`` seconds has failed;
- a member never heard is given ``startup_grace`` seconds from the start;
- a heartbeat whose member list leaves out its sender is a graceful leave;
- a death notice (syncproto DEATH, sent from the member's own host when its
  process ends) for the incarnation last heard ends that incarnation at once:
  the member has failed (DEAD), and nothing more from that incarnation counts.
  A notice from a member never heard (it died while starting) ends that
  incarnation too and takes away the start-up grace: its silence is judged
  after ``dead_after`` like any other (UNHEARD). A notice for an incarnation
  that is over, or for another one than the one last heard, changes nothing
  (STALE);
- a heartbeat from an incarnation of its sender that is over, or whose
  freshness counter is not above the last one heard from that incarnation, is
  stale (a replay or a late duplicate) and changes nothing. Incarnations are
  random: a new one is a restart, whatever its number.

Pure: time comes in as ``now``.
"""
from __future__ import annotations

ALIVE, LEAVE, STALE, RESTART = "alive", "leave", "stale", "restart"
DEAD, UNHEARD = "dead", "unheard"  # verdicts on a death notice


class FailureDetector:
    """Last arrival and boot epoch of each member; verdicts on silence."""

    MAX_PAST = 64  # earlier incarnations remembered per member

    def __init__(self, members, dead_after: float, startup_grace: float, now: float):
        self.dead_after, self.startup_grace = dead_after, startup_grace
        self.started = now
        self.last_heard = {m: now for m in members}
        self.boots: dict = {}  # member -> its current incarnation
        self.counters: dict = {}  # member -> the last freshness counter heard from it
        self.past: dict = {}  # member -> its earlier incarnations (a list, oldest first)
        self.deferred = False  # the last judgement was put off after the judge's own pause
        self.graceless: set = set()  # never heard, but announced dead: no start-up grace

    def heard(self, member, boot: int, counter: int, view, now: float) -> str:
        """One heartbeat from ``member``: its incarnation, its freshness counter and its
        view of the members. Returns ALIVE, LEAVE (a goodbye), STALE (a replay or an
        incarnation that is over: ignored) or RESTART (a new incarnation)."""
        known = self.boots.get(member)
        if boot in self.past.get(member, ()):
            return STALE
        if boot == known and counter <= self.counters[member]:
            return STALE
        verdict = ALIVE
        if known is not None and boot != known:
            self._retire(member, known)
            verdict = RESTART
        self.boots[member], self.counters[member] = boot, counter
        self.last_heard[member] = now
        return LEAVE if member not in view else verdict

    def died(self, member, boot: int) -> str:
        """A death notice for incarnation ``boot`` of ``member``: DEAD (the incarnation
        last heard is over: fail it now), UNHEARD (none heard yet: that one is over,
        and the member's silence is judged without the start-up grace) or STALE."""
        known = self.boots.get(member)
        if boot in self.past.get(member, ()) or (known is not None and boot != known):
            return STALE
        self._retire(member, boot)
        if known is None:
            self.graceless.add(member)
            return UNHEARD
        return DEAD

    def _retire(self, member, boot: int) -> None:
        """``boot`` of ``member`` is over (a restart replaced it, or it died)."""
        past = self.past.setdefault(member, [])
        if boot not in past:
            past.append(boot)
            del past[:-self.MAX_PAST]

    def touch(self, member, now: float) -> str:
        """Another authenticated, fresh message from ``member``: it lives."""
        self.last_heard[member] = now
        return ALIVE

    def heard_once(self, member) -> bool:
        return member in self.boots

    def limit(self, member) -> float:
        """How long ``member`` may be silent: dead_after once heard, else the start-up grace."""
        return self.dead_after if member in self.boots or member in self.graceless \
            else self.startup_grace

    def silent(self, members, now: float) -> list[tuple[object, float]]:
        """(member, seconds silent) for each of ``members`` silent beyond its limit."""
        out = []
        for member in members:
            quiet = now - self.last_heard.get(member, self.started)
            if quiet > self.limit(member):
                out.append((member, quiet))
        return out

    def judge(self, members, now: float, away: float,
              grace: float = 0.0) -> list[tuple[object, float]] | None:
        """(member, seconds silent) for each of ``members`` to be taken for failed: silent
        beyond its limit plus ``grace``. None when the judgement is put off: the judge
        itself was away (a long call, a starved CPU) for half of dead_after or more, so
        what members sent meanwhile may not have been read yet (Cassandra's rule: mark
        no member down right after a local pause). Put off once: a judge always that
        slow still judges every other round."""
        silent = self.silent(members, now)
        if silent and away > self.dead_after / 2 and not self.deferred:
            self.deferred = True
            return None
        self.deferred = False
        return [(m, q) for m, q in silent if q > self.limit(m) + grace]

    def forget(self, member, now: float) -> None:
        """Start ``member``'s clock again (it left; its next heartbeat is a return)."""
        self.last_heard[member] = now
