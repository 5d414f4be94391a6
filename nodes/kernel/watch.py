"""A kernel node's event log, written as the Python node writes its own (shell).

Two threads of the agent feed one JSON-lines file (``--events``), in the shape
experiments/analysis/attribution.py reads from every node:

- ``new``: every connection this node's kernel admitted, from ``conntrack -E``
  (the entries conntrackd put there, copies and commits, are left out: the
  Python node logs no ``new`` for a backup copy either);
- ``drop``: every packet the ruleset dropped, with its reason, from the NFLOG
  group the drop chains log to (nodes/kernel/nft.py; the kernel logs
  nflog.LOG_RATE a second at most, the counters count all).

At most MAX_RATE lines a second are written; the rest are counted as lost.
"""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections import deque

from nodes.kernel import conntrackd as ctd
from nodes.kernel import nflog

MAX_RATE = 2000


def stop_child(popen: subprocess.Popen | None, wait: float) -> None:
    """Terminate a child process if it runs; kill it after ``wait`` seconds."""
    if popen is None or popen.poll() is not None:
        return
    popen.terminate()
    try:
        popen.wait(wait)
    except subprocess.TimeoutExpired:
        popen.kill()


class KernelEvents:
    def __init__(self, path: str, node: str):
        self.node = node
        self.fh = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.window, self.in_window = 0, 0
        self.counters = {"events_written": 0, "events_lost": 0, "nflog_errors": 0}
        self.recent: deque = deque(maxlen=1 << 16)  # arrival times of admitted connections
        self.running = True
        self.conntrack = None
        self.nl = None

    def write(self, event: dict) -> None:
        with self.lock:
            if self.fh.closed:
                return
            second = int(time.monotonic())
            if second != self.window:
                self.window, self.in_window = second, 0
            if self.in_window >= MAX_RATE:
                self.counters["events_lost"] += 1
                return
            self.in_window += 1
            self.fh.write(json.dumps(event) + "\n")
            self.fh.flush()
            self.counters["events_written"] += 1

    def start(self) -> None:
        self.conntrack = subprocess.Popen(
            ["stdbuf", "-oL", "conntrack", "-E", "-e", "NEW", "-o", "timestamp"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nflog.NETLINK_NETFILTER)
        self.nl.bind((0, 0))
        self.nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.nl.settimeout(2.0)
        for msg in nflog.bind_messages():
            self.nl.send(msg)
            failed = [e for e in nflog.errors(self.nl.recv(4096)) if e]
            if failed:
                raise RuntimeError(f"NFLOG group {nflog.GROUP}: netlink error {failed[0]}")
        self.nl.settimeout(0.5)  # so that the reader sees close()
        threading.Thread(target=self.admitted, name="conntrack-events", daemon=True).start()
        threading.Thread(target=self.dropped, name="nflog", daemon=True).start()

    def admitted(self) -> None:
        for line in self.conntrack.stdout:
            parsed = ctd.parse_event(line, self.node)
            if parsed and parsed[1] == "NEW" and not parsed[3]:
                self.recent.append(time.monotonic())  # even when the log is over its rate
                self.write({"t": parsed[0], "node": self.node, "event": "new",
                            "entry": parsed[2]})

    def admitted_since(self, since: float) -> int:
        """Connections this node's kernel admitted after monotonic time ``since``
        (those of the last moments: their copies may still be on their way)."""
        recent = self.recent
        while recent and recent[0] <= since:
            recent.popleft()
        return len(recent)

    def dropped(self) -> None:
        while self.running:
            try:
                data = self.nl.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # ENOBUFS: the kernel logged faster than we read
                if not self.running:
                    return
                self.counters["nflog_errors"] += 1
                continue
            now = time.time()
            for reason, packet in nflog.packets(data):
                self.write({"t": now, "node": self.node, "event": "drop", "reason": reason,
                            "tuple": nflog.ip_tuple(packet)})

    def close(self) -> None:
        self.running = False
        stop_child(self.conntrack, 2)
        if self.nl is not None:
            self.nl.close()
        with self.lock:
            self.fh.close()
