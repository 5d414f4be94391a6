"""Commands that break nodes and mend them: crash, hang, resume, leave, restart.

Each goes through the one fault table (topo/faults.py) and then prints what
the controller did about membership.
"""
from __future__ import annotations

import time

from experiments.analysis.attribution import read_jsonl
from experiments.console.errors import ConsoleError
from topo import faults


class FaultCommands:
    """A mixin of ClusterCLI (experiments/console/__init__.py)."""

    def do_crash(self, line: str):
        """crash NODE: kill the node's process at once (SIGKILL), as a power failure would.

        Its death watch (a process beside it in its host) sees it end and tells
        its peers and the controller at once; its backup node carries its
        connections and the switches send its flows elsewhere. (With
        death_notice off, its peers wait for dead_after, 100 ms, of silence.)"""
        name = self.node(self.words(line, 1, "crash NODE")[0])
        if name not in self.cluster.procs:
            raise ConsoleError(f"{name} is not running: 'restart {name}' brings it back")
        faults.crash(self.cluster, name)
        print(f"{name} crashed")
        self.report_membership()

    def do_hang(self, line: str):
        """hang NODE: freeze the node's process (SIGSTOP): alive, but silent and stuck.

        Its peers cannot tell it from a crash; 'resume NODE' wakes it."""
        name = self.running(self.words(line, 1, "hang NODE")[0])
        faults.hang(self.cluster, name)
        print(f"{name} hung (SIGSTOP)")
        self.report_membership()

    def do_resume(self, line: str):
        """resume NODE: wake a hung node (SIGCONT); it finds out what it missed."""
        name = self.node(self.words(line, 1, "resume NODE")[0])
        if name not in self.cluster.hung:
            raise ConsoleError(f"{name} is not hung (hang it first with 'hang {name}')")
        faults.resume(self.cluster, name)
        print(f"{name} resumed (SIGCONT)")
        self.report_membership()

    def do_leave(self, line: str):
        """leave NODE: stop the node gracefully (SIGTERM): it says goodbye to its peers.

        Its peers know at once, without waiting for silence."""
        name = self.running(self.words(line, 1, "leave NODE")[0])
        faults.leave(self.cluster, name)
        print(f"{name} left the cluster")
        self.report_membership()

    def do_restart(self, line: str):
        """restart NODE: start a crashed or departed node again (a new boot).

        It asks its peers for the state it must hold (a bulk transfer) and
        carries traffic once it has it."""
        name = self.node(self.words(line, 1, "restart NODE")[0])
        if name in self.cluster.procs:
            raise ConsoleError(f"{name} is running: 'crash {name}' or 'leave {name}' first")
        t0 = time.monotonic()
        proc = faults.restart(self.cluster, name)
        self.cluster.wait_ready()
        sync = self.cluster.ask(name, "stats").get("sync") or {}
        print(f"{name} restarted (pid {proc.pid}), ready after {time.monotonic() - t0:.2f} s, "
              f"holding {sync.get('entries_backup', 0)} copies for other nodes")
        self.report_membership()

    def steered_to(self) -> list[str] | None:
        """The nodes the switches send new flows to, by the controller's last word."""
        live = None
        for ev in read_jsonl(self.ctl_events):
            if "live" in ev:
                live = ev["live"]
        return live

    def report_membership(self, timeout: float = 1.5) -> None:
        """Print what the controller did about membership since last time (waits a little)."""
        deadline = time.monotonic() + timeout
        while True:
            events = read_jsonl(self.ctl_events)
            news = [e for e in events[self.ctl_seen:] if e["event"] in ("node_down", "node_up")]
            if news or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self.ctl_seen = len(events)
        # The controller's word is not the nodes': each survivor notices the
        # silence on its own heartbeat clock, a few ms before or after. Wait
        # (same deadline) until their views agree, so that what is printed next
        # ('status') shows the cluster after the change, not half-way through it.
        while news and time.monotonic() < deadline and self.views_behind(news):
            time.sleep(0.02)
        for ev in news:
            why = f" ({ev['why']}{', silent %s ms' % ev['silent_ms'] if 'silent_ms' in ev else ''})" \
                if "why" in ev else ""
            moved = ev.get("buckets_moved", ev.get("buckets_returned", 0))
            print(f"controller: {ev['event'].replace('_', ' ')} {ev['node']}{why}; {moved} bucket(s) "
                  f"moved; new flows go to {', '.join(ev['live'])}")

    def views_behind(self, news: list[dict]) -> list[str]:
        """The running nodes whose view of the members does not yet show the news."""
        names = self.cluster.node_names()
        views = {}
        for name in names:
            if self.state(name) != "running":
                continue
            try:
                alive = self.cluster.ask(name, "members").get("alive")
            except (OSError, ValueError):
                continue  # gone since: nothing to wait for
            if alive is not None:  # Python nodes with sync; kernel nodes have no view to read
                views[name] = {names[i - 1] for i in alive if 0 < i <= len(names)}
        return membership_behind(news, views)


def membership_behind(news: list[dict], views: dict[str, set[str]]) -> list[str]:
    """Which nodes' views (node -> the members it takes for alive) lag the
    controller's membership events: a node reported down still in a view, or
    one reported up missing from it. A node's view of itself is not judged."""
    last = {}
    for ev in news:
        last[ev["node"]] = ev["event"]
    behind = []
    for name, alive in views.items():
        for node, event in last.items():
            if node != name and (node in alive) != (event == "node_up"):
                behind.append(name)
                break
    return behind
