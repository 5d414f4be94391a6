"""Commit before or after steering: the controller's side of kernel-node failover. Pure.

keepalived moves the virtual address and runs primary-backup.sh, which commits
conntrackd's external cache (``conntrackd -c``) into the kernel of the node that
takes over; if traffic arrives before the commit, the node has no entry for it
and drops or resets it (the race reported in keepalived's issue tracker). Here
the steering controller plays keepalived: on a failure it asks the nodes that
take the failed node's buckets to commit, and moves the buckets before the
commit (``after_steer``), after it (``before_steer``), or never commits.

``Commits`` makes the COMMIT messages and checks the answers; the Ryu app
(controller/app.py) sends and waits.
"""
from __future__ import annotations

import os

from nodes import syncproto as sp

ORDERS = ("before_steer", "after_steer", "never")
TIMEOUT = 1.0  # seconds to wait for COMMIT_DONE before steering anyway


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"commit {order!r}: use one of {', '.join(ORDERS)}")
    return order


class Commits:
    """COMMIT requests, fresh by a counter within this controller's incarnation."""

    def __init__(self, key: bytes, boot: int | None = None):
        self.key = key
        self.boot = boot or (int.from_bytes(os.urandom(8), "big") >> 1 or 1)
        self.seq = 0
        self.waiting: dict[int, int] = {}  # node id -> seq of its COMMIT

    def request(self, node: int) -> bytes:
        self.seq += 1
        self.waiting[node] = self.seq
        return sp.encode(sp.Message(sp.COMMIT, 0, node, self.boot, self.seq), self.key)

    def answered(self, data: bytes) -> tuple[int, int] | None:
        """(node, status) for the answer to a COMMIT still waited for, else None."""
        try:
            msg = sp.decode(data, self.key)
        except sp.Reject:
            return None
        if (msg.type != sp.COMMIT_DONE or msg.receiver != 0 or msg.to_boot != self.boot
                or self.waiting.get(msg.sender) != msg.seq):
            return None
        del self.waiting[msg.sender]
        return msg.sender, msg.query
