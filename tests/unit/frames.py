"""Frames for unit tests, built with scapy (no root, no network)."""
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

CLIENT, SERVER = "10.0.0.1", "10.0.0.201"
MAC_C, MAC_S = "00:00:00:00:00:01", "00:00:00:00:01:01"


def tcp(src=CLIENT, dst=SERVER, sport=40000, dport=21, flags="S", seq=1000, ack=0,
        payload=b"", window=8192, options=(), **ip) -> bytes:
    """``options`` as scapy spells them: [("WScale", 7), ("SAckOK", b""), ("SAck", (l, r))]."""
    return bytes(Ether(src=MAC_C, dst=MAC_S) / IP(src=src, dst=dst, **ip)
                 / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=window,
                       options=list(options)) / payload)


def udp(src=CLIENT, dst=SERVER, sport=5000, dport=53, payload=b"x") -> bytes:
    return bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def icmp(src=CLIENT, dst=SERVER, type=8, id=7) -> bytes:
    return bytes(Ether() / IP(src=src, dst=dst) / ICMP(type=type, id=id))


def arp() -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=CLIENT, pdst=SERVER))
