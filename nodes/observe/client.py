"""Where a node's control socket lives, and how to ask it something.

Sockets live under ``/run/fwcluster/<run-id>/<node>.sock``; ``current`` in
that folder names the newest run, so ``fw-inspect fw1`` needs no path.
"""
from __future__ import annotations

import json
import os
import socket

RUN_ROOT = os.environ.get("FWCLUSTER_RUN_ROOT", "/run/fwcluster")


def socket_path(run_id: str, node: str) -> str:
    return os.path.join(RUN_ROOT, run_id, f"{node}.sock")


def current_run() -> str | None:
    """The run id of the newest cluster started on this machine, if any."""
    try:
        with open(os.path.join(RUN_ROOT, "current"), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def set_current_run(run_id: str) -> None:
    os.makedirs(os.path.join(RUN_ROOT, run_id), exist_ok=True)
    with open(os.path.join(RUN_ROOT, "current"), "w", encoding="utf-8") as fh:
        fh.write(run_id + "\n")


def ask(path: str, command: str, timeout: float = 2.0) -> dict:
    """Send one command line to a node's control socket; return its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))
