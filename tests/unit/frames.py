"""Frames for unit tests, built with scapy (no root, no network). An address with a
colon makes an IPv6 frame, any other an IPv4 one."""
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether

from nodes.engine import OUTSIDE

CLIENT, SERVER = "10.0.0.1", "10.0.0.201"
CLIENT6, SERVER6 = "fd00::1", "fd00::c9"
MAC_C, MAC_S = "00:00:00:00:00:01", "00:00:00:00:01:01"
# every frame names its MACs: without them scapy resolves the destination (for IPv6 by
# sending neighbour solicitations and waiting seconds for an answer)
ETHER = Ether(src=MAC_C, dst=MAC_S)


def ip(src, dst, **fields):
    """The IP layer of the family of ``src``."""
    return IPv6(src=src, dst=dst, **fields) if ":" in src else IP(src=src, dst=dst, **fields)


def tcp(src=CLIENT, dst=SERVER, sport=40000, dport=21, flags="S", seq=1000, ack=0,
        payload=b"", window=8192, options=(), **fields) -> bytes:
    """``options`` as scapy spells them: [("WScale", 7), ("SAckOK", b""), ("SAck", (l, r))]."""
    return bytes(Ether(src=MAC_C, dst=MAC_S) / ip(src, dst, **fields)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window,
                       options=list(options)) / payload)


def udp(src=CLIENT, dst=SERVER, sport=5000, dport=53, payload=b"x") -> bytes:
    return bytes(ETHER / ip(src, dst) / UDP(sport=sport, dport=dport) / payload)


def icmp(src=CLIENT, dst=SERVER, type=8, id=7) -> bytes:
    """An ICMP echo (or other type) of IPv4, or ICMPv6's echo request or reply (``type``
    8 or 0 asks for 128 or 129 over IPv6)."""
    if ":" in src:
        layer = ICMPv6EchoRequest(id=id) if type in (8, 128) else ICMPv6EchoReply(id=id)
        return bytes(ETHER / IPv6(src=src, dst=dst) / layer)
    return bytes(ETHER / IP(src=src, dst=dst) / ICMP(type=type, id=id))


def arp() -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=CLIENT, pdst=SERVER))


def fragment_soup(fw, rnd, rounds: int, cut, mark, dup: float = 0.0) -> int:
    """Feed ``fw`` the fragments of ``rounds`` datagrams (``cut(rnd)`` gives one's
    fragments), some left out, in random order, with colliding identifications
    (``mark(frame, i)`` rewrites one's in place) and a share ``dup`` sent twice;
    returns how many fragments were fed, all on the outside port."""
    fed = 0
    for i in range(rounds):
        parts = cut(rnd)
        for f in rnd.sample(parts, rnd.randrange(1, len(parts) + 1)):
            f = bytearray(f)
            mark(f, i)
            fw.process(bytes(f), OUTSIDE, i * 0.5)
            fed += 1
            if dup and rnd.random() < dup:
                fw.process(bytes(f), OUTSIDE, i * 0.5)
                fed += 1
    return fed
