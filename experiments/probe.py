"""TCP probes through the cluster; the server echoes what it reads.

client: writes 16 bytes every few milliseconds on one connection. With
TCP_NODELAY new segments leave at once even while earlier ones are
unacknowledged, so after a failover the first one reaches the new node as
soon as the switches point there, not after a retransmission timeout.

udp-server / udp-client: the client says hello every --hello seconds; the
server streams a datagram every --interval back to it. Those are replies: a
node lets them through only with the flow's state, which the client's hello
creates and the sync replicates. A datagram cannot stall behind a window or
wait for a retransmission timer, so the first one after an outage is the moment
the path through the backup, with the state, works again (were the state
missing, only the next hello would open it). The client writes a JSON line per
outage longer than --gap to --out: the wall-clock time of the last datagram
before it and the first after it; and twice a second how many it has received.

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


def udp_serve(address: str, port: int, interval: float) -> None:
    """Stream a datagram every ``interval`` to the last client heard (replies only)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    sock.setblocking(False)
    print("probe server ready", flush=True)
    peer, seq, next_send = None, 0, time.monotonic()
    while True:
        try:
            while True:
                _, peer = sock.recvfrom(2048)
        except BlockingIOError:
            pass
        now = time.monotonic()
        if peer is not None and now >= next_send:
            try:
                sock.sendto(seq.to_bytes(8, "big"), peer)
            except OSError:  # ENOBUFS, an ICMP error reported: keep streaming
                pass
            seq += 1
            next_send = max(next_send + interval, now - interval)
        time.sleep(max(0.0, min(interval / 4, next_send - time.monotonic())))


def udp_send(address: str, port: int, hello: float, gap: float, out: str) -> None:
    """Say hello every ``hello`` s (that opens the flow and keeps it alive); log the
    outages, longer than ``gap``, in what the server streams back."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((address, port))
    print(f"probe connected from port {sock.getsockname()[1]}", flush=True)
    last, received, next_hello, next_report = None, 0, 0.0, 0.0
    with open(out, "a", encoding="utf-8") as fh:
        while True:
            now = time.monotonic()
            if now >= next_report:  # how much has come through, for whoever watches
                print(f"probe received {received}", flush=True)
                next_report = now + 0.5
            if now >= next_hello:
                try:
                    sock.send(b"hello")
                except OSError:
                    pass
                next_hello = now + hello
            sock.settimeout(max(0.001, min(next_hello, next_report) - now))
            try:
                sock.recv(64)
            except (TimeoutError, ConnectionRefusedError):
                continue
            wall = time.time()
            if last is not None and wall - last > gap:
                fh.write(json.dumps({"last": last, "first": wall,
                                     "gap_ms": round((wall - last) * 1000, 2)}) + "\n")
                fh.flush()
            last = wall
            received += 1
            if received == 1:
                print("probe streaming", flush=True)


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
    parser.add_argument("role", choices=("server", "client", "rtt", "udp-server", "udp-client"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--interval", type=float, default=0.005)
    parser.add_argument("--connections", type=int, default=20, help="rtt: connections, in turn")
    parser.add_argument("--rounds", type=int, default=50, help="rtt: round trips per connection")
    parser.add_argument("--size", type=int, default=64, help="rtt: bytes per message")
    parser.add_argument("--out", help="rtt: JSON lines, one per connection; udp-client: one "
                        "per outage")
    parser.add_argument("--hello", type=float, default=2.0,
                        help="udp-client: seconds between hellos")
    parser.add_argument("--gap", type=float, default=0.01,
                        help="udp-client: the silence (s) that counts as an outage")
    args = parser.parse_args(argv)
    if args.role == "server":
        serve(args.address, args.port)
    elif args.role == "udp-server":
        udp_serve(args.address, args.port, args.interval)
    elif args.role == "udp-client":
        if not args.out:
            parser.error("udp-client needs --out FILE")
        udp_send(args.address, args.port, args.hello, args.gap, args.out)
    elif args.role == "rtt":
        if not args.out:
            parser.error("rtt needs --out FILE")
        rtt(args.address, args.port, args.connections, args.rounds, args.size, args.out)
    else:
        send(args.address, args.port, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
