"""A delay line: what goes in comes out a fixed time later, in order.

Geographically separated nodes see each other with a delay. Where the kernel
has netem, the cluster runner puts the delay on the sync links; where it does
not (see ../shared/ENVIRONMENT.md), the node holds each message it sends on
the cluster network in this line before the socket sees it. One fixed delay
keeps the queue sorted by departure time, so a deque is enough.

Pure: time comes in as ``now``.
"""
from __future__ import annotations

from collections import deque


class DelayLine:
    """Items pushed at ``now`` are due at ``now + delay``, first in, first out."""

    def __init__(self, delay: float):
        if delay < 0:
            raise ValueError(f"a delay cannot be negative ({delay} s)")
        self.delay = delay
        self.queue: deque = deque()

    def push(self, now: float, item) -> None:
        self.queue.append((now + self.delay, item))

    def due(self, now: float) -> list:
        """The items whose time has come, oldest first, taken out of the line."""
        out = []
        queue = self.queue
        while queue and queue[0][0] <= now:
            out.append(queue.popleft()[1])
        return out

    def next_due(self) -> float | None:
        """When the oldest item is due, or None when the line is empty."""
        return self.queue[0][0] if self.queue else None

    def __len__(self) -> int:
        return len(self.queue)
