"""The control socket, served without ever holding up the packet loop.

A control client that connects and says nothing, or reads slowly, used to
block the node for a second; a ``dump`` of a big table ran on the packet
thread at ~22 us an entry, so from about 5k entries the node stopped sending
heartbeats and its peers took it for dead. Here every connection is
non-blocking and is read and written only when ``select`` says it can be;
long answers (``dump``) are produced in slices, and the loop gives them at
most ``budget`` seconds between two rounds of packets and heartbeats. A dump
lists the entries the table held when it was asked (a cut), with their
fields as they are when each slice is written.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback

SLICE = 256  # entries a dump writes at a time
IDLE = 2.0  # seconds a connection may stay silent or unread before it is closed
MAX_REQUEST = 4096  # bytes of a command line


class _Conn:
    def __init__(self, sock: socket.socket, now: float):
        self.sock, self.inbuf, self.out, self.parts = sock, b"", b"", None
        self.deadline = now + IDLE


class ControlServer:
    """A listening Unix socket and its connections; ``answer(command)`` makes the reply."""

    def __init__(self, path: str, answer, dump_parts, parts: dict | None = None):
        """``answer(command) -> dict``; ``dump_parts() -> iterator of str`` for ``dump``;
        ``parts``: other commands answered in slices, command -> the same kind of
        function (an empty slice, or None, lets the node's loop go on and sends
        nothing)."""
        self.path, self.answer = path, answer
        self.parts = {"dump": dump_parts, **(parts or {})}
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.conns: dict[int, _Conn] = {}
        self.counters = {"control_timeouts": 0, "control_errors": 0, "control_faults": 0}

    def readers(self) -> list:
        return [self.sock] + [c.sock for c in self.conns.values() if c.parts is None and not c.out]

    def writers(self) -> list:
        return [c.sock for c in self.conns.values() if c.out]

    @property
    def busy(self) -> bool:
        """A long answer is being produced: the loop should not sleep in select."""
        return any(c.parts is not None and not c.out for c in self.conns.values())

    def readable(self, sock, now: float) -> None:
        if sock is self.sock:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self.conns[conn.fileno()] = _Conn(conn, now)
            return
        c = self.conns.get(sock.fileno())
        if c is None:
            return
        try:
            data = sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._close(c, error=True)
        if not data:
            return self._close(c)
        c.inbuf += data
        if b"\n" in c.inbuf or len(c.inbuf) >= MAX_REQUEST:
            command = c.inbuf.split(b"\n", 1)[0].decode(errors="replace").strip()
            c.deadline = now + IDLE
            if command in self.parts:
                c.parts = iter(self.parts[command]())
            else:
                c.out = json.dumps(self.safe_answer(command)).encode()
                c.parts = iter(())

    def safe_answer(self, command: str) -> dict:
        """The answer, or, should answering fail, an error for the client and the
        traceback in the node's log: a fault in introspection must not end a node
        that carries traffic."""
        try:
            return self.answer(command)
        except Exception as err:  # noqa: BLE001 - any fault of the answer, reported
            self.counters["control_faults"] += 1
            traceback.print_exc(file=sys.stderr)
            return {"error": f"{command.split()[0] if command else command!r} failed in the "
                             f"node: {type(err).__name__}: {err} (see the node's log)"}

    def writable(self, sock, now: float) -> None:
        c = self.conns.get(sock.fileno())
        if c is None:
            return
        try:
            sent = sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return self._close(c, error=True)
        c.out = c.out[sent:]
        c.deadline = now + IDLE
        if not c.out:
            self._produce(c, time.monotonic() + 0.0)  # next slice, if the answer has more

    def work(self, budget: float) -> None:
        """Produce slices of long answers for at most ``budget`` seconds."""
        if not self.conns:
            return
        until = time.monotonic() + budget
        for c in list(self.conns.values()):
            if c.parts is not None and not c.out:
                self._produce(c, until)

    def _produce(self, c: _Conn, until: float) -> None:
        while not c.out:
            try:
                c.out = (next(c.parts) or "").encode()
            except StopIteration:
                return self._close(c)
            except Exception:  # noqa: BLE001 - a fault in a listing ends it, not the node
                self.counters["control_faults"] += 1
                traceback.print_exc(file=sys.stderr)
                return self._close(c, error=True)
            if time.monotonic() >= until:
                return

    def expire(self, now: float) -> None:
        """Close connections that stayed silent or unread too long."""
        for c in list(self.conns.values()):
            if now > c.deadline:
                self.counters["control_timeouts"] += 1
                self._close(c)

    def _close(self, c: _Conn, error: bool = False) -> None:
        if error:
            self.counters["control_errors"] += 1
        self.conns.pop(c.sock.fileno(), None)
        c.sock.close()

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._close(c)
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
