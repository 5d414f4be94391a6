"""The cluster's sync config file, as every node and the controller read it.

JSON written by the cluster runner (topo/net.py)::

    {"names": {"1": "fw1", ...}, "addresses": {"1": "10.0.1.1", ...},
     "key_file": ".../cluster.key", "settings": {... nodes/settings.py ...},
     "cluster_delay": 0.0, "controller": "10.0.1.254"}

``settings`` is checked by the one schema (nodes/settings.py); a bad file is
refused in one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from nodes.settings import SettingsError, SyncSettings, parse

MIN_KEY = 16  # bytes of the cluster key at least


@dataclass
class ClusterConfig:
    """What a sync config file says."""

    names: dict[int, str]
    addresses: dict[int, str]
    key: bytes
    settings: SyncSettings
    cluster_delay: float = 0.0  # seconds one way, for the node's delay line
    controller: str | None = None  # where the steering controller hears heartbeats

    def me(self, name: str) -> int:
        ids = {n: i for i, n in self.names.items()}
        if name not in ids:
            raise SettingsError(f"node {name!r} is not in the cluster ({', '.join(ids)})")
        return ids[name]


def load(path: str) -> ClusterConfig:
    """Read and check a sync config file; OSError, KeyError or SettingsError (one line)."""
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    with open(raw["key_file"], "rb") as fh:
        key = fh.read()
    if len(key) < MIN_KEY:
        raise SettingsError(f"the cluster key must be at least {MIN_KEY} bytes")
    cluster_delay = float(raw.get("cluster_delay", 0.0))
    if cluster_delay < 0:
        raise SettingsError(f"cluster_delay = {cluster_delay}: a delay cannot be negative")
    return ClusterConfig({int(i): n for i, n in raw["names"].items()},
                         {int(i): a for i, a in raw["addresses"].items()}, key,
                         parse(SyncSettings, raw.get("settings", {}), "settings."),
                         cluster_delay, raw.get("controller"))
