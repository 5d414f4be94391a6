"""The node's kernel fast path: an nftables netdev table that forwards offloaded
connections port to port (nodes/fastpath.py decides which).

Which kernel mechanism: probed on this machine's kernel (6.18) in a network
namespace: tc's flower classifier is absent ("TC classifier not found"), and
nftables' flowtable cannot be made ("No such file or directory": no
nf_flow_table), but the netdev family's ingress hook with ``fwd`` and a set
with per-element counters works. Its ingress hook runs after the packet
sockets bound to every protocol (ETH_P_ALL taps) and before those bound to
one, so a node with the fast path hears its ports with one socket per
ethertype it handles (nodes/shell/ports.py) and a forwarded packet never
reaches it.

The table belongs to one ``nft -j -i`` session that lives as long as the node
(``flags owner``; the session gets SIGKILL when the node dies, and its input
ends): a killed node's kernel stops forwarding with it, as a crashed node
forwards nothing. Every change and every reading of the counters goes through
that session, one command a line; an empty set's listing after a batch of
changes says that nft has done them. Nothing here decides anything.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import signal
import subprocess
import sys

from nodes import fastpath as fp

ANSWER_TIMEOUT = 10.0  # seconds nft may take to answer one listing


class FastPathUnavailable(RuntimeError):
    """This kernel (or this machine's nft) cannot make the fast path's table."""


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class KernelFastPath:
    """The table in this node's namespace, its nft session, and the elements it holds."""

    mechanism = "nftables netdev ingress + fwd"

    def __init__(self, outside: str, inside: str, size: int):
        try:
            self.proc = subprocess.Popen(["nft", "-j", "-i"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, preexec_fn=_die_with_parent)
        except OSError as err:
            raise FastPathUnavailable(f"fastpath: cannot run nft ({err.strerror}); install "
                                      "nftables or start the node without --fastpath") from None
        flags = fcntl.fcntl(self.proc.stderr.fileno(), fcntl.F_GETFL)
        fcntl.fcntl(self.proc.stderr.fileno(), fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.installed: set[tuple] = set()
        self.errors = 0
        errors = self._run(fp.ruleset(outside, inside, size), f"list set netdev {fp.TABLE} "
                                                               f"{fp.SYNC_SET}")
        if errors is None or errors:
            message = (errors or ["nft did not answer"])[0]
            self.close()
            raise FastPathUnavailable(f"fastpath: nft could not make its netdev table here "
                                      f"({message}); start the node without --fastpath")

    def _run(self, commands: list[str], listing: str) -> list[str] | None:
        """Send ``commands`` then ``listing``; the error lines nft wrote, None if the
        session did not answer (it is gone)."""
        self.answer = None
        try:
            self.proc.stdin.write("\n".join(commands + [listing]) + "\n")
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], ANSWER_TIMEOUT)
            self.answer = self.proc.stdout.readline() if ready else ""
        except (BrokenPipeError, OSError, ValueError):
            return None
        if not self.answer.endswith("\n"):  # none, or cut short: the session ended
            self.answer = None
            return None
        return [line for line in self._stderr().splitlines() if line.startswith("Error")]

    def _stderr(self) -> str:
        try:
            return os.read(self.proc.stderr.fileno(), 1 << 20).decode(errors="replace")
        except (BlockingIOError, OSError, ValueError):
            return ""

    def apply(self, adds: list[bytes], removes: list[bytes]) -> list[bytes]:
        """Put ``adds`` in and take ``removes`` out; the adds the kernel does not hold."""
        removes = [k for k in removes if k in self.installed]
        adds = [k for k in adds if k not in self.installed]
        if not adds and not removes:
            return []
        lines = fp.changes(adds, removes).splitlines()
        errors = self._run(lines, f"list set netdev {fp.TABLE} {fp.SYNC_SET}")
        if errors == []:
            self.installed.difference_update(removes)
            self.installed.update(adds)
            return []
        self.errors += 1  # a line fails whole: what the kernel holds now, from its listing
        held = self.read()
        self.installed = set(held or ())
        return [k for k in adds if k not in self.installed]

    def read(self) -> dict | None:
        """Every element's counters (key -> (packets, L3 bytes)); None if nft failed."""
        errors = self._run([], f"list table netdev {fp.TABLE}")
        if errors is None or errors:
            self.errors += 1
            return None
        try:
            return fp.readings(self.answer)
        except (ValueError, KeyError, TypeError):
            # Not the listing nft writes (a fault here ended the node): a failed reading,
            # and a session whose answers can no longer be told apart. It is ended (the
            # kernel drops its table with it) and the node finds it gone, as any session
            # that dies: the engine carries every connection again.
            self.errors += 1
            text = self.answer
            print(f"fastpath: nft answered a listing with {len(text)} characters that are "
                  f"not one: {text[:120]!r} ... {text[-120:]!r}; ending its session",
                  file=sys.stderr, flush=True)
            self.proc.kill()
            return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_words(self) -> str:
        """What the session wrote on its standard error and nobody read yet."""
        return self._stderr()

    def close(self) -> None:
        """End the session: the kernel removes the table with it."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
