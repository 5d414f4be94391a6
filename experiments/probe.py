"""A TCP probe: the client writes 16 bytes every few milliseconds, the server echoes.

With TCP_NODELAY new segments leave at once even while earlier ones are
unacknowledged, so after a failover the first one reaches the new node as
soon as the switches point there, not after a retransmission timeout.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time


def serve(address: str, port: int) -> None:
    srv = socket.create_server((address, port))
    print("probe server ready", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.close()


def send(address: str, port: int, interval: float) -> None:
    sock = socket.create_connection((address, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    print(f"probe connected from port {sock.getsockname()[1]}", flush=True)
    n = 0
    while True:
        try:
            sock.send(n.to_bytes(16, "big"))
            n += 1
        except BlockingIOError:
            pass
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--interval", type=float, default=0.005)
    args = parser.parse_args(argv)
    if args.role == "server":
        serve(args.address, args.port)
    else:
        send(args.address, args.port, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
