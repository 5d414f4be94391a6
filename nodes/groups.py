"""Backup groups (the seed's method 600): who keeps a copy of whose state.

Every node derives the same groups from the same membership, so no message
is needed to agree on them. The default is the seed's cyclic arrangement:
in member order, each node's backups are the next k nodes (with three nodes
and k = 1: fw2 backs up fw1, fw3 backs up fw2, fw1 backs up fw3), so each
node stores (1 + k)/N of all entries instead of all of them. With
connection-specific selection a connection's own key picks its k backups
among the other members, spreading one node's state over many.
"""
from __future__ import annotations

import zlib


def node_backups(members: list[int], k: int) -> dict[int, list[int]]:
    """Cyclic backups: member i is backed up by the next min(k, N-1) members."""
    ms = sorted(set(members))
    n = len(ms)
    k = max(0, min(k, n - 1))
    return {m: [ms[(i + j) % n] for j in range(1, k + 1)] for i, m in enumerate(ms)}


def connection_backups(key: bytes, owner: int, members: list[int], k: int) -> list[int]:
    """Connection-specific backups: k other members, picked by a hash of the key."""
    others = sorted(set(members) - {owner})
    if not others:
        return []
    k = max(0, min(k, len(others)))
    start = zlib.crc32(key) % len(others)
    return [others[(start + j) % len(others)] for j in range(k)]


def adopter(members_before: list[int], k: int, failed: int, alive: list[int]) -> int | None:
    """The node that takes over a failed node's connections: its first live backup."""
    for b in node_backups(members_before, k).get(failed, []):
        if b in alive:
            return b
    return None
