"""Forwarding to the home node (the second seed): state stays where it was made.

The node that sees a connection's first packet is its home and keeps its
state there, unreplicated. A node that receives a packet it holds no state
for (the gateway engine says ASK) looks the flow up in its forward table;
where the home is known it forwards the packet to it over the cluster
network; where it is not, it multicasts a query carrying the packet to the
other nodes, the home answers, the asking node stores the answer and forwards this
packet and later ones directly. No answer by the deadline: the packets are
dropped and counted, and the burst asked only once.

Pure: time comes in as ``now``; messages pile up in ``outbox`` as (peer, bytes),
where peer ``syncproto.MULTICAST`` means the cluster's multicast group.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from nodes import syncproto as sp
from nodes.packet import canonical, key_str
from nodes.samples import percentiles
from nodes.settings import DEFAULT

MAX_QUEUED = 64  # packets of one unknown flow waiting for the answer


# every counter, so that a listing shows a 0 rather than leaving the line out (a
# lab's "counters fw1" lost queries_sent when fw1 had sent none)
COUNTERS = ("answers_received", "answers_sent", "cluster_bytes_sent", "cluster_messages_sent",
            "dropped_no_home", "dropped_no_peer", "dropped_query_rate", "dropped_queue_full",
            "forward_entries_expired", "forward_entries_home_failed", "forward_table_hits",
            "forwarded_bytes", "forwarded_packets", "late_answers", "queries_received",
            "queries_sent", "queries_unanswered")


@dataclass
class _Pending:
    query: int
    asked: float
    deadline: float
    frames: list = field(default_factory=list)  # (frame, ingress)


class HomeForwarder:
    """One node's forward table and discovery."""

    def __init__(self, me: int, key: bytes, boot: int,
                 query_timeout: float = DEFAULT.query_timeout, idle: float = 300.0,
                 names: dict[int, str] | None = None, live_peers=None, stamp=None,
                 max_queries: int = 1000):
        """``live_peers()``: the other live nodes, to ask (the sync engine's membership);
        ``stamp(peer)``: the freshness counter and the peer's incarnation for a message
        (the sync engine's, nodes/syncproto.py); ``max_queries``: queries a second at
        most (each carries the packet to every node: a flood would multiply)."""
        self.me, self.key, self.boot = me, key, boot
        self.live_peers = live_peers or (lambda: [])
        self.stamp = stamp or (lambda peer: (0, 0))
        self.max_queries = max_queries  # multicast queries a second at most
        self._rate = [float("-inf"), 0]  # start of this second, queries sent in it
        self.names = names or {}
        self.query_timeout, self.idle = query_timeout, idle
        self.forward: dict[bytes, list] = {}  # canonical key -> [home, expires]
        self.pending: dict[tuple, _Pending] = {}
        self.queries: dict[int, bytes] = {}  # query id -> canonical key
        self.next_query = 1
        self.outbox: list[tuple[int, bytes]] = []
        self.counters: Counter = Counter(dict.fromkeys(COUNTERS, 0))  # zeros shown too
        self.discovery: deque = deque(maxlen=100_000)  # seconds from query to answer
        self.events: list[tuple[float, str, dict]] = []  # (now, kind, fields), drained by the shell

    def _send(self, peer: int, msg: sp.Message) -> None:
        msg.seq, msg.to_boot = self.stamp(0 if peer == sp.MULTICAST else peer)
        data = sp.encode(msg, self.key)
        self.outbox.append((peer, data))
        self.counters["cluster_bytes_sent"] += len(data)
        self.counters["cluster_messages_sent"] += 1

    def unknown(self, frame: bytes, ingress: int, key: bytes, now: float) -> None:
        """A packet with no state here: forward it to its home, or ask for the home
        (the gateway engine's HomePort)."""
        ck = canonical(key)
        known = self.forward.get(ck)
        if known is not None and known[1] > now:
            known[1] = now + self.idle
            self.counters["forward_table_hits"] += 1
            self._forward(known[0], frame, ingress)
            return
        waiting = self.pending.get(ck)
        if waiting is not None:  # a burst: ask once
            if len(waiting.frames) < MAX_QUEUED:
                waiting.frames.append((frame, ingress))
            else:
                self.counters["dropped_queue_full"] += 1
            return
        if not self.live_peers():
            self.counters["dropped_no_peer"] += 1
            return
        start, asked = self._rate
        if now - start >= 1.0:
            self._rate = [now, 0]
        elif asked >= self.max_queries:  # a flood of unknown packets: no storm of queries
            self.counters["dropped_query_rate"] += 1
            return
        self._rate[1] += 1
        qid = self.next_query
        self.next_query += 1
        self.pending[ck] = _Pending(qid, now, now + self.query_timeout, [(frame, ingress)])
        self.queries[qid] = ck
        self.counters["queries_sent"] += 1
        # the multicast request: the packet and who asks, once, to every node
        self._send(sp.MULTICAST, sp.Message(sp.HOME_QUERY, self.me, 0, self.boot, query=qid,
                                            ingress=ingress, frame=frame))

    def _forward(self, home: int, frame: bytes, ingress: int) -> None:
        self._send(home, sp.Message(sp.FORWARD, self.me, home, self.boot, ingress=ingress,
                                    frame=frame))
        self.counters["forwarded_packets"] += 1
        self.counters["forwarded_bytes"] += len(frame)

    def query(self, msg: sp.Message, engine, now: float) -> None:
        """Another node asks whose flow this is: answer if it is ours."""
        self.counters["queries_received"] += 1
        key = engine.is_home(msg.frame, now)
        if key is not None:
            self.counters["answers_sent"] += 1
            self._send(msg.sender, sp.Message(sp.HOME_ANSWER, self.me, msg.sender, self.boot,
                                              query=msg.query, home=self.me, key=key))

    def answer(self, msg: sp.Message, now: float) -> None:
        """The home answered: remember it and send it what waited."""
        ck = self.queries.pop(msg.query, None)
        waiting = self.pending.pop(ck, None) if ck is not None else None
        if waiting is None:
            self.counters["late_answers"] += 1
            return
        self.counters["answers_received"] += 1
        self.discovery.append(now - waiting.asked)
        self.forward[ck] = [msg.home, now + self.idle]
        self.events.append((now, "home_learned", {
            "key": key_str(ck), "home": self.names.get(msg.home, msg.home),
            "discovery_ms": round((now - waiting.asked) * 1000, 3)}))
        for frame, ingress in waiting.frames:
            self._forward(msg.home, frame, ingress)

    def tick(self, now: float) -> None:
        """Give up on unanswered queries (few, and due within milliseconds)."""
        for ck, waiting in list(self.pending.items()):
            if now >= waiting.deadline:
                del self.pending[ck]
                self.queries.pop(waiting.query, None)
                self.counters["queries_unanswered"] += 1
                self.counters["dropped_no_home"] += len(waiting.frames)
                self.events.append((now, "home_unknown", {"key": key_str(ck),
                                                          "dropped": len(waiting.frames)}))

    def expire(self, now: float) -> None:
        """Forget idle forward-table entries (a sweep of the table: housekeeping)."""
        for ck in [ck for ck, (_, expires) in self.forward.items() if expires <= now]:
            del self.forward[ck]
            self.counters["forward_entries_expired"] += 1

    def peer_down(self, peer: int) -> None:
        """A home failed: its flows are gone with it; forget where they were."""
        gone = [ck for ck, (home, _) in self.forward.items() if home == peer]
        for ck in gone:
            del self.forward[ck]
        self.counters["forward_entries_home_failed"] += len(gone)

    def stats(self) -> dict:
        return {"forward_table": len(self.forward), "pending_queries": len(self.pending),
                "discovery_ms": percentiles(self.discovery), "counters": dict(self.counters)}
