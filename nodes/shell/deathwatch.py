"""A node's death notice: a small process beside the node that says when it died.

Heartbeats alone make a peer wait ``dead_after`` (100 ms) of silence before it
takes a node for failed, because silence cannot tell a dead process from a
slow one. A process that has died can be told at once by its own host, as
ClusterXL's critical-device monitoring or a CARP demotion does: this watcher
runs in the node's host, holds the read end of a pipe whose write end only
the node holds, and when that end closes without a goodbye (the kernel closes
it when the node's process ends, however it ends: SIGKILL, a crash, an
uncaught exception) it sends the death notice to every peer and to the
controller.

The node seals the notice itself at start (nodes/syncproto.py, DEATH, under
the cluster key, naming its own incarnation) and hands it over with where to
send it, so the watcher holds no key and decides nothing. A notice is only
true, and only sent, once that incarnation is over; a replayed copy tells the
receivers nothing new.

What it does not catch, and heartbeats still do: a hung process (SIGSTOP, a
livelock: its pipe stays open), a link down, and a whole host gone (the
watcher dies with it).

Protocol on the watcher's stdin: one JSON line ``{"node", "source", "to":
[[address, port], ...], "notice": hex, "delay", "events"}``, then either
``bye`` (a graceful leave: the node said goodbye itself; the watcher exits
silently) or end of file (the node died: send the notice, then exit).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time


class DeathWatch:
    """The node's side: start the watcher, and disarm it before a graceful exit."""

    def __init__(self, node: str, notice: bytes, source: str, to: list[tuple[str, int]],
                 delay: float = 0.0, events: str | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodes.shell.deathwatch", node], stdin=subprocess.PIPE)
        self.proc.stdin.write(json.dumps({
            "node": node, "source": source, "to": [list(t) for t in to],
            "notice": notice.hex(), "delay": delay, "events": events}).encode() + b"\n")
        self.proc.stdin.flush()

    def disarm(self) -> None:
        """The node leaves gracefully (it said goodbye): no notice."""
        try:
            self.proc.stdin.write(b"bye\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # the watcher is gone already: nothing would be sent anyway
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def watch(stdin, node: str) -> int:
    """The watcher: wait for the node's word or its end; send the notice at its end."""
    plan = json.loads(stdin.readline() or "null")
    if plan is None:
        print(f"deathwatch {node}: no plan from the node (it died at once?)", file=sys.stderr)
        return 2
    rest = stdin.read()  # returns at "bye" and EOF, or at EOF alone when the node dies
    if rest.strip() == "bye":
        return 0
    ended = time.time()
    if plan["delay"] > 0:  # the cluster network's emulated one-way delay, as for all it carries
        time.sleep(plan["delay"])
    notice = bytes.fromhex(plan["notice"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((plan["source"], 0))
    except OSError:
        pass  # its sync address is gone (the host is going down): send from any
    sent = 0
    for address, port in plan["to"]:
        try:
            sock.sendto(notice, (address, port))
            sent += 1
        except OSError:
            pass  # that receiver's network is down: its heartbeats' silence will tell
    if plan.get("events"):
        with open(plan["events"], "a+", encoding="utf-8") as fh:
            fh.seek(0, os.SEEK_END)
            start = "\n" if fh.tell() and _last_byte(plan["events"]) != b"\n" else ""
            fh.write(start + json.dumps({"t": round(ended, 6), "node": node,
                                         "event": "death_notice_sent", "to": sent}) + "\n")
    print(f"deathwatch {node}: the node's process ended; death notice sent to {sent} "
          f"of {len(plan['to'])}", file=sys.stderr, flush=True)
    return 0


def _last_byte(path: str) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def main(argv: list[str]) -> int:
    # A Ctrl-C or a SIGTERM to the node's process group is the node's to answer
    # (it says goodbye and disarms this); the watcher ends when the node does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return watch(sys.stdin, argv[0] if argv else "?")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
