"""The node's event log: the engines' events as JSON lines, written a slice at a time.

Writing is I/O on the node's one thread: a flood made 8k events a second, and
writing half a second of them at once (7-15 us each) kept the node from sending
heartbeats for 40-135 ms, so its peers took it for dead. The log writes for at
most a budget per round of the loop, keeps at most ``limit`` waiting, and counts
what it had to leave out (as ctnetlink's event socket overruns with ENOBUFS).
"""
from __future__ import annotations

import collections
import json
import time


class EventLog:
    """Events waiting to be written to ``fh`` (None: counted, not kept)."""

    def __init__(self, fh, node: str, wall_offset: float, limit: int = 100_000,
                 clock=time.monotonic):
        self.fh, self.node, self.wall_offset = fh, node, wall_offset
        self.limit, self.clock = limit, clock
        self.pending: collections.deque = collections.deque()
        self.written = 0
        self.lost = 0  # events that found the log full

    def add(self, events: list) -> None:
        """Queue (t, kind, fields) events; beyond ``limit`` waiting, count them lost."""
        if self.fh is None:
            return
        room = max(0, self.limit - len(self.pending))
        if len(events) > room:
            self.lost += len(events) - room
            events = events[:room]
        self.pending.extend(events)

    def write(self, budget: float | None = None) -> int:
        """Write waiting events for about ``budget`` seconds at most (None: all of
        them); return how many."""
        if not self.pending:
            return 0
        pending, node, offset, out = self.pending, self.node, self.wall_offset, []
        until = None if budget is None else self.clock() + budget
        while pending:
            t, kind, fields = pending.popleft()
            out.append(json.dumps({"t": round(t + offset, 6), "node": node, "event": kind,
                                   **fields}))
            if until is not None and len(out) % 32 == 0 and self.clock() >= until:
                break
        self.fh.write("\n".join(out) + "\n")
        self.fh.flush()
        self.written += len(out)
        return len(out)

    def close(self) -> None:
        if self.fh is not None:
            self.write()
            self.fh.close()
