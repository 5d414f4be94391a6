"""Fill a node's connection table with real connections: a SYN for each of ``count``
distinct keys, sent as Ethernet frames from a host's port (a packet socket).

Key ``i`` is 10.9.128.0/17 + i // 60000 -> ``--dst``, TCP source port
1024 + i % 60000, destination port ``--dport``; the frames go to a MAC address no
host has, so the host behind the node drops them unseen (no RST, no ARP) and each
connection stays SYN_SENT in the node's table (120 s) as an opening it admitted.

    python -m experiments.synfill --intf a0 --dst 10.9.0.2 --count 1000000 --rate 30000

Prints how many frames it sent, and in how many seconds. Used by the table-size and
replication-lag curves (experiments/bench_scaling.py).
"""
from __future__ import annotations

import argparse
import socket
import struct
import time

FILL_PREFIX = "10.9.128.0/17"
FILL_DPORT = 9  # discard: an allowing rule for it admits the fill, nothing else
NOBODY_MAC = bytes.fromhex("020000000099")  # locally administered, on no host
PORTS = 60000


def fold(data: bytes) -> int:
    """The Internet checksum of ``data`` (even length)."""
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fill_key(i: int) -> tuple[bytes, int]:
    """The source address and port of the ``i``-th connection of the fill."""
    base = int.from_bytes(socket.inet_aton(FILL_PREFIX.split("/")[0]), "big")
    return (base + i // PORTS).to_bytes(4, "big"), 1024 + i % PORTS


def tcp_frame(src_mac: bytes, src: bytes, sport: int, dst: bytes, dport: int, seq: int,
              ack: int = 0, flags: int = 0x02, window: int = 64240,
              options: bytes = b"\x02\x04\x05\xb4", size: int = 0,
              dst_mac: bytes = NOBODY_MAC) -> bytes:
    """An Ethernet frame with a TCP segment (``options`` padded to 32 bits by the caller,
    ``size`` bytes of zeros as payload), its checksums right."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (5 + len(options) // 4) << 4, flags, window, 0, 0) + options + bytes(size)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + fold(ip).to_bytes(2, "big") + ip[12:]
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + fold(pseudo + tcp + bytes(len(tcp) % 2)).to_bytes(2, "big") + tcp[18:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def syn_frame(src_mac: bytes, src: bytes, sport: int, dst: bytes, dport: int,
              seq: int) -> bytes:
    """An Ethernet frame with a TCP SYN (MSS option), its checksums right."""
    return tcp_frame(src_mac, src, sport, dst, dport, seq)


def send_fill(intf: str, dst: str, count: int, first: int = 0, dport: int = FILL_DPORT,
              rate: float = 0.0, burst: int = 100) -> tuple[int, float]:
    """Send the SYNs of keys first .. first + count - 1, at ``rate`` a second (0: as
    fast as the port takes them) in bursts of ``burst`` frames; return how many left,
    and in how many seconds.
    The frames are built before the first leaves, so that sending costs this host's
    core no more than the send calls (the sync benchmarks share it with a node)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((intf, 0))
    with open(f"/sys/class/net/{intf}/address") as fh:
        src_mac = bytes.fromhex(fh.read().strip().replace(":", ""))
    dst_b = socket.inet_aton(dst)
    frames = [syn_frame(src_mac, *fill_key(i), dst_b, dport, i * 7919 & 0xFFFFFFFF)
              for i in range(first, first + count)]
    sent, start = 0, time.monotonic()
    for n, frame in enumerate(frames):
        if rate and n % burst == 0:  # paced: a node admits new connections more slowly
            ahead = start + n / rate - time.monotonic()  # than it forwards
            if ahead > 0:
                time.sleep(ahead)
        try:
            sock.send(frame)
            sent += 1
        except OSError:  # the port's queue is full: the next round sends it again
            pass
    took = time.monotonic() - start
    sock.close()
    return sent, took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intf", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--dport", type=int, default=FILL_DPORT)
    parser.add_argument("--rate", type=float, default=0.0, help="SYNs a second (0: no limit)")
    parser.add_argument("--burst", type=int, default=100,
                        help="frames sent back to back between two pauses of the pacing")
    args = parser.parse_args(argv)
    if args.burst < 1:
        parser.error(f"--burst {args.burst}: must be at least 1 (frames between pauses)")
    if not (0 <= args.first and args.first + args.count <= 32768 * PORTS):
        parser.error(f"--first + --count must be at most {32768 * PORTS} (the /17's keys)")
    sent, took = send_fill(args.intf, args.dst, args.count, args.first, args.dport,
                           args.rate, args.burst)
    print(sent, f"{took:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
