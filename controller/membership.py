"""What the steering controller concludes from the nodes' heartbeats and death
notices. Pure: no ryu.

The Ryu app (controller/app.py) reads every heartbeat that has arrived on the
sync network, hands each to ``arrived`` with the time it read it, and only
then asks ``judge`` who has been silent too long, so a controller that fell
behind never takes a node for dead while that node's heartbeats wait unread
in its socket. The rules are the nodes' own (nodes/failure.py).
"""
from __future__ import annotations

from collections import Counter

from nodes import syncproto as sp
from nodes.failure import DEAD, LEAVE, STALE, FailureDetector
from nodes.settings import SyncSettings

UP, DOWN = "node_up", "node_down"


class ClusterMembership:
    """Heartbeats in, ("node_up", node, fields) / ("node_down", node, fields) out."""

    def __init__(self, names: dict[int, str], key: bytes, settings: SyncSettings, now: float):
        self.names, self.key = names, key
        self.detector = FailureDetector(names, settings.dead_after, settings.startup_grace, now)
        self.heartbeats: Counter = Counter()  # by node name
        self.rejected: Counter = Counter()  # by reason
        self.judgements_deferred = 0
        self.last_judged = now
        self.boot_at_down: dict[str, int | None] = {}  # node -> its incarnation when judged down

    def arrived(self, data: bytes, now: float, live: list[str]) -> list[tuple]:
        """One datagram from the sync network; what it changes about ``live`` nodes."""
        try:
            msg = sp.decode(data, self.key)
        except sp.Reject as err:
            self.rejected[err.reason] += 1
            return []
        if msg.type == sp.DEATH and msg.sender in self.names:
            return self.death_notice(msg)
        if msg.type != sp.HEARTBEAT or msg.sender not in self.names or msg.receiver != 0:
            self.rejected["not_a_heartbeat_for_me"] += 1
            return []
        node = self.names[msg.sender]
        verdict = self.detector.heard(msg.sender, msg.boot, msg.seq, msg.members, now)
        if verdict == STALE:
            self.rejected["stale"] += 1  # a replay, or an incarnation that is over
            return []
        if verdict == LEAVE:
            if node not in live:
                return []
            self.boot_at_down[node] = msg.boot
            return [(DOWN, node, {"why": "left"})]
        self.heartbeats[node] += 1
        if node not in live and msg.ready:
            # the same incarnation as when it was judged down: only taken for dead, it
            # kept its state, and what it had adopted too
            kept = self.boot_at_down.pop(node, None) == msg.boot
            return [(UP, node, {"boot": msg.boot, "kept_state": kept})]
        return []

    def death_notice(self, msg: sp.Message) -> list[tuple]:
        """A node's process ended (its host said so): down now, without waiting for
        silence; it comes back only as a new incarnation, with no state kept."""
        verdict = self.detector.died(msg.sender, msg.boot)
        if verdict == STALE:
            self.rejected["death_not_current"] += 1  # an incarnation already over, or another
            return []
        if verdict != DEAD:  # UNHEARD: died starting; judged on its silence, without grace
            return []
        node = self.names[msg.sender]
        self.boot_at_down[node] = None
        return [(DOWN, node, {"why": "announced"})]

    def judge(self, now: float, live: list[str]) -> list[tuple]:
        """The live nodes silent beyond their limit, as node_down actions; none this round
        when the controller itself was away since its last judgement for half of
        dead_after or more (the rule of the nodes: FailureDetector.judge), since the
        heartbeats sent meanwhile may not have been read yet."""
        ids = {n: i for i, n in self.names.items()}
        away, self.last_judged = now - self.last_judged, now
        failed = self.detector.judge([ids[n] for n in live], now, away)
        if failed is None:
            self.judgements_deferred += 1
            return []
        out = []
        for m, quiet in failed:
            self.boot_at_down[self.names[m]] = self.detector.boots.get(m)
            out.append((DOWN, self.names[m], {"why": "silent", "silent_ms": round(quiet * 1000, 1)}))
        return out
