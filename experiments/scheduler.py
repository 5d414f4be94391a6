"""Applies a spec's timeline to a running cluster, each entry at its time (a thread)."""
from __future__ import annotations

import threading
import time

from experiments.timeline import ACTIONS, expand


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
                ACTIONS[event["fault"]][1](self.cluster, event)
            except Exception as err:  # keep the run going; the error is reported
                self.errors.append(f"{event['fault']} at {event['at']}s: {err}")
                self.cluster.log("fault_failed", fault=event["fault"], error=str(err))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
