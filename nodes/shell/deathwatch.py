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

Protocol: two pipes from the node (``DeathWatch``). On the first, one JSON
line ``{"node", "source", "to": [[address, port], ...], "notice": hex,
"delay", "events"}``, then either ``bye`` (a graceful leave: the node said
goodbye itself; the watcher exits silently) or the end of either pipe (the
node died: send the notice, then exit).
"""
from __future__ import annotations

import fcntl
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time


HIGH_FD = 1000  # where the second pipe's write end goes: above every socket the node opens


class DeathWatch:
    """The node's side: start the watcher, and disarm it before a graceful exit.

    Two pipes, because of how a process ends. The kernel frees its memory first
    (about 20 ms per 300 MB), then releases its files one by one, and releasing
    a packet socket with a TX ring takes about 20 ms (measured here: a process
    with two such sockets closed the pipe 47 ms after SIGKILL when the pipe was
    released after them, 1.6 ms when it was released first). Linux 6.18
    releases the highest descriptor first; older kernels released the lowest
    first. One pipe's write end sits low (it is made before any socket), the
    other's high (``HIGH_FD``); the watcher acts on the first to close."""

    def __init__(self, node: str, notice: bytes, source: str, to: list[tuple[str, int]],
                 delay: float = 0.0, events: str | None = None):
        low_r, self.low = os.pipe()
        high_r, high_w = os.pipe()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.high = fcntl.fcntl(high_w, fcntl.F_DUPFD_CLOEXEC, min(HIGH_FD, soft - 1))
        os.close(high_w)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodes.shell.deathwatch", node, str(low_r), str(high_r)],
            stdin=subprocess.DEVNULL, pass_fds=(low_r, high_r))
        os.close(low_r)
        os.close(high_r)
        os.write(self.low, json.dumps({
            "node": node, "source": source, "to": [list(t) for t in to],
            "notice": notice.hex(), "delay": delay, "events": events}).encode() + b"\n")

    def disarm(self) -> None:
        """The node leaves gracefully (it said goodbye): no notice."""
        try:
            os.write(self.low, b"bye\n")  # before either pipe closes: the watcher reads it first
        except OSError:
            pass  # the watcher is gone already: nothing would be sent anyway
        os.close(self.low)
        os.close(self.high)
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def watch(low: int, high: int, node: str) -> int:
    """The watcher: wait for the node's word or its end; send the notice at its end."""
    said = b""
    while b"\n" not in said:  # the plan comes first (written as the watcher starts)
        chunk = os.read(low, 65536)
        if not chunk:
            print(f"deathwatch {node}: no plan from the node (it died at once?)",
                  file=sys.stderr)
            return 2
        said += chunk
    line, said = said.split(b"\n", 1)
    plan = json.loads(line)
    os.set_blocking(low, False)
    os.set_blocking(high, False)
    ended_low = ended_high = False
    while not (ended_low or ended_high):
        select.select([low, high], [], [])
        # the node's word, if any, is in the low pipe before either pipe closes
        more, ended_low = _drain(low)
        said += more
        if said.strip() == b"bye":
            return 0
        ended_high = _drain(high)[1]
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


def _drain(fd: int) -> tuple[bytes, bool]:
    """What non-blocking pipe ``fd`` holds, and whether its write ends are all closed."""
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
        return data, True
    except BlockingIOError:
        return data, False


def _last_byte(path: str) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def main(argv: list[str]) -> int:
    # A Ctrl-C or a SIGTERM to the node's process group is the node's to answer
    # (it says goodbye and disarms this); the watcher ends when the node does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(argv) != 3:
        print("usage: python -m nodes.shell.deathwatch NODE LOW_FD HIGH_FD (the node starts "
              "it: nodes/shell/node.py)", file=sys.stderr)
        return 2
    return watch(int(argv[1]), int(argv[2]), argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
