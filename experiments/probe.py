"""TCP probes through the cluster; the server echoes what it reads.

client: writes 16 bytes every few milliseconds on one connection. With
TCP_NODELAY new segments leave at once even while earlier ones are
unacknowledged, so after a failover the first one reaches the new node as
soon as the switches point there, not after a retransmission timeout.

rtt: opens connections one after another and on each measures the round trip
of small messages, one at a time; writes a JSON line per connection (its
local port, connect time, round trips in ms) to --out.
"""
from __future__ import annotations

import argparse
import json
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


def rtt(address: str, port: int, connections: int, rounds: int, size: int, out: str) -> None:
    payload = bytes(size)
    with open(out, "w", encoding="utf-8") as fh:
        for _ in range(connections):
            record = {"rtt_ms": []}
            t0 = time.perf_counter()
            try:
                with socket.create_connection((address, port), timeout=5) as sock:
                    record["connect_ms"] = (time.perf_counter() - t0) * 1000
                    record["port"] = sock.getsockname()[1]
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for _ in range(rounds):
                        t = time.perf_counter()
                        sock.sendall(payload)
                        got = 0
                        while got < size:
                            chunk = sock.recv(size - got)
                            if not chunk:
                                raise ConnectionError("the server closed the connection")
                            got += len(chunk)
                        record["rtt_ms"].append((time.perf_counter() - t) * 1000)
            except OSError as err:
                record["error"] = str(err)
            fh.write(json.dumps(record) + "\n")
            fh.flush()
    print("rtt probe done", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=("server", "client", "rtt"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--connections", type=int, default=20, help="rtt: connections, in turn")
    parser.add_argument("--rounds", type=int, default=50, help="rtt: round trips per connection")
    parser.add_argument("--size", type=int, default=64, help="rtt: bytes per message")
    parser.add_argument("--out", help="rtt: JSON lines, one per connection")
    args = parser.parse_args(argv)
    if args.role == "server":
        serve(args.address, args.port)
    elif args.role == "rtt":
        if not args.out:
            parser.error("rtt needs --out FILE")
        rtt(args.address, args.port, args.connections, args.rounds, args.size, args.out)
    else:
        send(args.address, args.port, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
