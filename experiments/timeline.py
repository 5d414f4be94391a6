"""Faults on a timeline: a spec's ``[[timeline]]`` entries, applied during the traffic.

    [[timeline]]
    at = 2.0            # seconds after the traffic starts
    fault = "crash"     # see FAULTS
    node = "fw1"

Parameters by fault: ``link_down``/``link_up``: ``intf`` (eth0 outside, eth1
inside, eth2 sync); ``sync_loss``: ``percent``; ``rate_limit``: ``intf`` and
``mbit`` (0 lifts it). ``controller_restart`` takes no node. ``snapshot`` is
not a fault: it appends every node's counters to the run's snapshots.jsonl;
with ``every = s`` and ``until = t`` it repeats from ``at`` to ``until``. Every fault is
written with its time to the run's event log by the cluster that applies it.
"""
from __future__ import annotations

import threading
import time

FAULTS = {
    "crash": ((), lambda c, e: c.crash_node(e["node"])),
    "hang": ((), lambda c, e: c.hang_node(e["node"])),
    "resume": ((), lambda c, e: c.resume_node(e["node"])),
    "leave": ((), lambda c, e: c.leave_node(e["node"])),
    "restart": ((), lambda c, e: c.restart_node(e["node"])),
    "link_down": (("intf",), lambda c, e: c.link(e["node"], e["intf"], False)),
    "link_up": (("intf",), lambda c, e: c.link(e["node"], e["intf"], True)),
    "sync_cut": ((), lambda c, e: c.link(e["node"], "eth2", False)),
    "sync_restore": ((), lambda c, e: c.link(e["node"], "eth2", True)),
    "sync_loss": (("percent",), lambda c, e: c.sync_loss(e["node"], float(e["percent"]))),
    "rate_limit": (("intf", "mbit"), lambda c, e: c.rate_limit(e["node"], e["intf"],
                                                               float(e["mbit"]))),
    "controller_restart": ((), lambda c, e: c.restart_controller()),
    "snapshot": ((), lambda c, e: c.snapshot()),  # not a fault: every node's counters, now
}
NODELESS = ("controller_restart", "snapshot")
REPEATABLE = ("snapshot",)
MAX_REPEATS = 1000
INTERFACES = ("eth0", "eth1", "eth2")


def check(event: dict, nodes: int) -> str | None:
    """What is wrong with one timeline entry for a cluster of ``nodes``, or None."""
    fault = event.get("fault")
    if fault not in FAULTS:
        return f"fault {fault!r} unknown (use {', '.join(FAULTS)})"
    at = event.get("at")
    if not isinstance(at, (int, float)) or at < 0:
        return f"{fault}: 'at' must be seconds >= 0"
    if fault not in NODELESS:
        node = event.get("node", "")
        if not (isinstance(node, str) and node.startswith("fw") and node[2:].isdigit()
                and 1 <= int(node[2:]) <= nodes):
            return f"{fault}: node {node!r} is not fw1..fw{nodes}"
    params, _ = FAULTS[fault]
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


class Timeline(threading.Thread):
    """Applies timeline entries to a running cluster at their times."""

    def __init__(self, cluster, events: list[dict]):
        super().__init__(name="timeline", daemon=True)
        self.cluster, self.events = cluster, sorted(expand(events), key=lambda e: e["at"])
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.skipped: list[dict] = []  # the traffic ended before their time

    def run(self) -> None:
        start = time.monotonic()
        for i, event in enumerate(self.events):
            if self.stopping.wait(max(0.0, start + event["at"] - time.monotonic())):
                self.skipped = self.events[i:]
                return
            try:
                FAULTS[event["fault"]][1](self.cluster, event)
            except Exception as err:  # keep the run going; the error is reported
                self.errors.append(f"{event['fault']} at {event['at']}s: {err}")
                self.cluster.log("fault_failed", fault=event["fault"], error=str(err))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
