"""Reading a campaign's raw data: points, their sessions, counters, events and snapshots."""
from __future__ import annotations

import glob
import json
import os
from collections import defaultdict

from experiments.analysis.attribution import attribute, node_events, read_jsonl


def read_json(path: str, default=None):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def load_points(exp_dir: str) -> list[dict]:
    """Every finished point of one experiment, with its raw data."""
    out = []
    for path in sorted(glob.glob(os.path.join(exp_dir, "points", "*", "point.json"))):
        d = os.path.dirname(path)
        p = read_json(path)
        p["dir"] = d
        p["spec"] = read_json(os.path.join(d, "spec.resolved.json"), {})
        p["records"] = attribute(read_jsonl(os.path.join(d, "sessions.jsonl")), node_events(d))
        p["stats"] = read_json(os.path.join(d, "stats.json"), {})
        p["raw"] = read_json(os.path.join(d, "raw.json"), {})
        p["events"] = read_jsonl(os.path.join(d, "events.jsonl"))
        p["snapshots"] = read_jsonl(os.path.join(d, "snapshots.jsonl"))
        out.append(p)
    return out


def group(points: list[dict], *params: str) -> dict[tuple, list[dict]]:
    """Points by variant and the named swept parameters (repetitions together)."""
    out = defaultdict(list)
    for p in points:
        out[(p["variant"], *(p["params"].get(k) for k in params))].append(p)
    return dict(out)


def _share(p: dict, counts) -> float:
    """Share of the point's planned sessions whose record ``counts``; a session never
    recorded counts as not succeeded."""
    planned = p["spec"].get("traffic", {}).get("sessions") or len(p["records"])
    return sum(1 for r in p["records"] if counts(r)) / planned if planned else 0.0


def failed_share(p: dict) -> float:
    """Sessions of the point that did not succeed (never recorded ones too)."""
    return 1 - _share(p, lambda r: r["outcome"] == "ok")


def refused_share(p: dict) -> float:
    """Sessions whose data connection a node refused at least once (the window hit it),
    whether or not the client's TCP got through on a later SYN."""
    return _share(p, lambda r: r.get("data_refusals", 0) > 0)


def duration(p: dict) -> float:
    return max(1e-9, p["t_traffic_end"] - p["t_traffic_start"])


def sync_counter(p: dict, name: str, section: str = "sync") -> float:
    """A counter of the nodes' sync (or home forwarding) engines, summed over the nodes."""
    return sum(s.get(section, {}).get("counters", {}).get(name, 0)
               for s in p["stats"].values() if isinstance(s, dict))
