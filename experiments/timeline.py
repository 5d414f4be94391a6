"""Faults on a timeline: a spec's ``[[timeline]]`` entries, applied during the traffic.

    [[timeline]]
    at = 2.0            # seconds after the traffic starts
    fault = "crash"     # see FAULTS
    node = "fw1"

The faults are topo/faults.py's (experiments/scheduler.py applies them).
Parameters by fault: ``link_down``/``link_up``: ``intf`` (eth0 outside, eth1
inside, eth2 sync); ``sync_loss``: ``percent``; ``rate_limit``: ``intf`` and
``mbit`` (0 lifts it). ``controller_restart`` takes no node. ``snapshot`` is
not a fault: it appends every node's counters to the run's snapshots.jsonl;
with ``every = s`` and ``until = t`` it repeats from ``at`` to ``until``;
``check`` runs the cluster consistency check (nodes/observe/consistency.py)
and appends its report to the run's consistency.jsonl. Every fault is
written with its time to the run's event log by the cluster that applies it.
"""
from __future__ import annotations

from topo.faults import FAULTS, INTERFACES


def _snapshot(cluster, _event) -> None:
    cluster.snapshot()


def _check(cluster, _event) -> None:
    cluster.consistency()


# Every action a timeline may hold: the faults (topo/faults.py), a snapshot (every
# node's counters, now) and a check (the consistency check, into consistency.jsonl).
ACTIONS = {**{name: (f.params, f.apply) for name, f in FAULTS.items()},
           "snapshot": ((), _snapshot), "check": ((), _check)}
NODELESS = tuple(n for n, f in FAULTS.items() if not f.needs_node) + ("snapshot", "check")
REPEATABLE = ("snapshot", "check")
MAX_REPEATS = 1000


def check(event: dict, nodes: int) -> str | None:
    """What is wrong with one timeline entry for a cluster of ``nodes``, or None."""
    fault = event.get("fault")
    if fault not in ACTIONS:
        return f"fault {fault!r} unknown (use {', '.join(ACTIONS)})"
    at = event.get("at")
    if not isinstance(at, (int, float)) or at < 0:
        return f"{fault}: 'at' must be seconds >= 0"
    if fault not in NODELESS:
        node = event.get("node", "")
        if not (isinstance(node, str) and node.startswith("fw") and node[2:].isdigit()
                and 1 <= int(node[2:]) <= nodes):
            return f"{fault}: node {node!r} is not fw1..fw{nodes}"
    params, _ = ACTIONS[fault]
    for name in params:
        if name not in event:
            return f"{fault}: needs {name!r}"
    if "intf" in event and event["intf"] not in INTERFACES:
        return f"{fault}: intf {event['intf']!r} is not one of {', '.join(INTERFACES)}"
    repeat = {"every", "until"} & set(event)
    if repeat:
        if fault not in REPEATABLE or repeat != {"every", "until"}:
            return f"{fault}: every and until go together, on {', '.join(REPEATABLE)} only"
        every, until = event["every"], event["until"]
        if not (isinstance(every, (int, float)) and isinstance(until, (int, float))
                and every > 0 and until >= at and (until - at) / every <= MAX_REPEATS):
            return (f"{fault}: every must be > 0 s and until >= at, at most {MAX_REPEATS} "
                    "repeats")
    unknown = set(event) - {"at", "fault", "node", "every", "until", *params}
    if unknown:
        return f"{fault}: unknown fields {sorted(unknown)}"
    return None


def expand(events: list[dict]) -> list[dict]:
    """Each repeated entry (every, until) as one entry per time."""
    out = []
    for event in events:
        if "every" not in event:
            out.append(event)
            continue
        once = {k: v for k, v in event.items() if k not in ("every", "until")}
        steps = int(round((event["until"] - event["at"]) / event["every"], 9)) + 1
        out += [{**once, "at": round(event["at"] + i * event["every"], 6)} for i in range(steps)]
    return out
