"""The Wireshark dissector on messages built here (no cluster, no root): every record
type of both families and a HOME_ANSWER for an IPv6 connection, each message's fields
as tshark shows them against nodes/syncproto.py's own decoding (the Mininet capture
test does the same for what real clusters sent)."""
import shutil

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from nodes import syncproto as sp
from nodes.packet import ip_bytes, make_key
from tests.integration.test_capture import python_view, tshark

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None,
                                reason="tshark not installed (make setup installs it)")
C4, S4, C6, S6 = (ip_bytes(a) for a in ("10.0.0.1", "10.0.0.201", "fd00::1:1", "fd00::2:1"))
CTRL6 = make_key(6, C6, 40000, S6, 21)
WINDOW = (10, 20, 30, 7, 1, 40, 50, 60, 8, 2)
MESSAGES = [
    sp.Message(sp.DATA, 1, 2, 5, seq=1, records=[
        (sp.R_ENTRY, {"key": make_key(6, C4, 40000, S4, 21), "state": "ESTABLISHED", "owner": 1,
                      "timeout": 30.0, "helper": "ftp", "master": None, "window": WINDOW}),
        (sp.R_ENTRY, {"key": CTRL6, "state": "ESTABLISHED", "owner": 1, "timeout": 30.0,
                      "helper": "ftp", "master": None, "window": WINDOW}),
        (sp.R_ENTRY, {"key": make_key(6, C6, 41000, S6, 50001), "state": "SYN_SENT", "owner": 1,
                      "timeout": 120.0, "helper": None, "master": CTRL6,
                      "scales": (7, 1, 8, 2)}),
        (sp.R_EXPECT, {"proto": 6, "src": C6, "dst": S6, "dport": 50002, "owner": 1,
                       "timeout": 300.0, "master": CTRL6}),
        (sp.R_EXPECT, {"proto": 6, "src": None, "dst": C4, "dport": 50003, "owner": 1,
                       "timeout": 300.0, "master": make_key(6, C4, 40000, S4, 21)})]),
    sp.Message(sp.DATA, 1, 2, 5, seq=2, records=[
        (sp.R_EXPECT_DEL, {"proto": 6, "src": None, "dst": C6, "dport": 50004, "owner": 1}),
        (sp.R_ENTRY_DEL, {"key": CTRL6, "owner": 1}),
        (sp.R_BULK_END, {"records": 3})]),
    sp.Message(sp.HOME_ANSWER, 2, 1, 5, seq=9, query=4, home=2, key=CTRL6),
    sp.Message(sp.HOME_ANSWER, 2, 1, 5, seq=10, query=5, home=2, key=make_key(17, C4, 5000, S4, 53)),
]


def test_the_dissector_shows_what_syncproto_decodes_for_both_families(tmp_path):
    key = b"k" * 32
    wire = [sp.encode(m, key) for m in MESSAGES]
    pcap = str(tmp_path / "sync.pcap")
    wrpcap(pcap, [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                  / IP(src="10.0.1.1", dst="10.0.1.2") / UDP(sport=sp.PORT, dport=sp.PORT) / w
                  for w in wire])
    frames = tshark(pcap)
    assert sorted(frames) == [1, 2, 3, 4]
    for n, data in enumerate(wire, 1):
        msg = sp.decode(data, key)
        shown = {k: v for k, v in frames[n].items() if k != "frame.number"}
        assert shown == python_view(msg, len(data) - sp.HEADER_LEN - sp.MAC_LEN), n
    assert frames[1]["fwsync.record.type"] == [1, 9, 9, 11, 3]
    assert frames[1]["fwsync.src6"] == ["fd00::1:1", "fd00::1:1", "fd00::1:1", "fd00::1:1",
                                        "fd00::1:1"]
