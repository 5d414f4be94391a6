"""IPv6 through the pure engine: parsing, rules, the connection table, ICMPv6, FTP
over IPv6 (RFC 2428), the sync records, and an IPv6 FTP session across a simulated
cluster."""
import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6MLReport, ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, IPv6ExtHdrHopByHop)
from scapy.layers.l2 import Ether

from nodes import syncproto as sp
from nodes.engine import ACCEPT, DROP, HOLD, INSIDE, OUTSIDE, GatewayEngine
from nodes.packet import (PROTO_ICMPV6, PROTO_TCP, checksums_ok, ip_bytes, ip_str, key_str, make_key,
                          parse_ipv6)
from nodes.rules import RuleSet
from tests.unit.cluster_sim import Net
from tests.unit.frames import (CLIENT, CLIENT6, ETHER, SERVER, SERVER6, fragment_soup, icmp, tcp,
                               udp)

RULES = RuleSet.from_text(
    "10.0.0.0/25 10.0.0.192/26 tcp 21 accept helper=ftp\n"
    "fd00::/120 fd00::c0/122 tcp 21 accept helper=ftp\n"
    "fd00::/120 fd00::c0/122 icmpv6 any accept\n"
    "any any udp 53 accept\n")
C6, S6 = ip_bytes(CLIENT6), ip_bytes(SERVER6)


@pytest.fixture
def fw():
    return GatewayEngine("fw1", RULES)


def test_an_ipv6_segment_parses_through_its_extension_headers():
    frame = bytes(ETHER / IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrHopByHop()
                  / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(offset=0, m=0)  # atomic
                  / TCP(sport=40000, dport=21, flags="S", seq=7, window=500))
    pkt = parse_ipv6(frame)
    assert pkt.key == make_key(PROTO_TCP, C6, 40000, S6, 21)
    assert (pkt.seq, pkt.window, pkt.payload_off, pkt.payload_end) == (7, 500, len(frame),
                                                                       len(frame))
    assert checksums_ok(frame)
    bad = bytearray(frame)
    bad[-3] ^= 1  # the TCP checksum (urgent pointer last, checksum before it)
    assert not checksums_ok(bytes(bad))
    assert parse_ipv6(frame[:60]) == "truncated_ipv6"
    first = bytes(ETHER / IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment(m=1, id=9)
                  / TCP())
    assert parse_ipv6(first) == "fragment"
    assert ip_str(C6) == "fd00::1" and key_str(pkt.key).startswith("tcp src=fd00::1 dst=fd00::c9")


def test_rules_of_one_family_do_not_match_the_other():
    rules = RuleSet.from_text("10.0.0.0/8 any tcp 80 accept\n"
                              "fd00::/16 any tcp 80 drop\n"
                              "any any tcp 443 accept\n")
    assert rules.match(6, ip_bytes("10.1.2.3"), ip_bytes("10.0.0.9"), 80).lineno == 1
    assert rules.match(6, ip_bytes("fd00::5"), ip_bytes("fd00::9"), 80).lineno == 2
    # an IPv6 address whose low 32 bits look like 10/8 is not matched by the IPv4 rule
    assert rules.match(6, ip_bytes("::a00:1"), ip_bytes("fd00::9"), 80) is None
    assert rules.match(6, ip_bytes("2001:db8::1"), ip_bytes("10.0.0.9"), 443).lineno == 3


def test_an_ipv6_connection_is_tracked_both_ways_and_refused_by_the_rules(fw):
    assert fw.process(tcp(CLIENT6, SERVER6, flags="S", seq=100), OUTSIDE, 0) == ACCEPT
    assert fw.process(tcp(SERVER6, CLIENT6, 21, 40000, "SA", 500, 101), INSIDE, 0) == ACCEPT
    assert fw.process(tcp(CLIENT6, SERVER6, flags="A", seq=101, ack=501), OUTSIDE, 0) == ACCEPT
    entry, _ = fw.table.lookup(make_key(PROTO_TCP, C6, 40000, S6, 21))
    assert entry.state == "ESTABLISHED" and entry.as_dict(0)["tuple"]["src"] == "fd00::1"
    # the window is tracked for IPv6 as for IPv4
    assert fw.process(tcp(CLIENT6, SERVER6, flags="A", seq=101 + (1 << 30), ack=501),
                      OUTSIDE, 0) == DROP
    assert fw.drops["tcp_out_of_window"] == 1
    assert fw.process(tcp(CLIENT6, SERVER6, dport=22, flags="S"), OUTSIDE, 0) == DROP
    assert fw.drops["policy"] == 1
    # an IPv4 connection of the same ports is another connection
    assert fw.process(tcp(CLIENT, SERVER, flags="A", seq=101, ack=501), OUTSIDE, 0) == DROP
    assert fw.drops["tcp_no_entry"] == 1


def test_icmpv6_echo_is_tracked_and_neighbour_discovery_passes_as_arp_does(fw):
    assert fw.process(icmp(SERVER6, CLIENT6, type=0, id=3), INSIDE, 0) == DROP  # no request
    assert fw.drops["icmp_no_entry"] == 1
    assert fw.process(icmp(CLIENT6, SERVER6, type=8, id=3), OUTSIDE, 0) == ACCEPT
    assert fw.process(icmp(SERVER6, CLIENT6, type=0, id=3), INSIDE, 0) == ACCEPT
    assert len(fw.table) == 1
    ns = bytes(ETHER / IPv6(src=CLIENT6, dst="ff02::1:ff00:c9", hlim=255)
               / ICMPv6ND_NS(tgt=SERVER6))
    na = bytes(ETHER / IPv6(src=SERVER6, dst=CLIENT6, hlim=255) / ICMPv6ND_NA(tgt=SERVER6))
    mld = bytes(ETHER / IPv6(src="fe80::1", dst="ff02::16", hlim=1) / ICMPv6MLReport())
    assert [fw.process(f, OUTSIDE, 0) for f in (ns, na, mld)] == [ACCEPT] * 3
    assert fw.counters["nd_passed"] == 2 and fw.counters["mld_passed"] == 1
    assert len(fw.table) == 1  # nothing of the link is tracked


def test_an_icmpv6_error_is_admitted_only_as_related_to_the_connection_it_quotes(fw):
    query = udp(CLIENT6, SERVER6, 5000, 53)
    assert fw.process(query, OUTSIDE, 0) == ACCEPT
    quoted = IPv6(query[14:])
    too_big = bytes(ETHER / IPv6(src="fd00::fe", dst=CLIENT6) / ICMPv6PacketTooBig(mtu=1280)
                    / quoted)
    assert fw.process(too_big, INSIDE, 0.1) == ACCEPT  # no rule allows ICMPv6 from fd00::fe
    assert fw.counters["icmp_errors_related"] == 1
    stray = IPv6(udp(CLIENT6, SERVER6, 6000, 53)[14:])
    assert fw.process(bytes(ETHER / IPv6(src=SERVER6, dst=CLIENT6) / ICMPv6DestUnreach()
                            / stray), INSIDE, 0.1) == DROP
    misdirected = bytes(ETHER / IPv6(src=SERVER6, dst="fd00::7") / ICMPv6DestUnreach() / quoted)
    assert fw.process(misdirected, INSIDE, 0.1) == DROP
    assert fw.drops == {"icmp_error_no_entry": 1, "icmp_error_misdirected": 1}


def fragments6(frame: bytes, size: int) -> list[bytes]:
    """An IPv6 packet cut into fragments of about ``size`` bytes (scapy's fragment6)."""
    from scapy.layers.inet6 import fragment6
    eth = Ether(frame)
    packet = eth[IPv6]
    packet = IPv6(bytes(packet.__class__(src=packet.src, dst=packet.dst) / IPv6ExtHdrFragment()
                        / packet.payload))
    return [bytes(Ether(src=eth.src, dst=eth.dst) / f) for f in fragment6(packet, size)]


def big_ping6(src=CLIENT6, dst=SERVER6, echo=ICMPv6EchoRequest, size=3000):
    return bytes(ETHER / IPv6(src=src, dst=dst) / echo(id=5, data=bytes(size)))


def test_ipv6_fragments_are_judged_as_their_datagram_and_go_out_as_they_came(fw):
    parts = fragments6(big_ping6(), 1280)
    assert len(parts) == 3 and parse_ipv6(parts[0]) == "fragment"
    assert [fw.process(f, OUTSIDE, 0) for f in parts] == [HOLD] * 3
    assert fw.take_fragments() == [(f, OUTSIDE) for f in parts]
    back = fragments6(big_ping6(SERVER6, CLIENT6, ICMPv6EchoReply), 1280)
    assert [fw.process(f, INSIDE, 0.1) for f in reversed(back)] == [HOLD] * 3
    assert sorted(f for f, _ in fw.take_fragments()) == sorted(back)
    assert fw.defrag.counters["datagrams_reassembled"] == 2 and len(fw.table) == 1
    denied = fragments6(big_ping6(SERVER6, "fd00::7"), 1280)  # no rule allows it
    assert [fw.process(f, INSIDE, 0.2) for f in denied] == [HOLD, HOLD, DROP]
    assert fw.take_fragments() == [] and fw.drops["policy"] == 3


def test_ipv6_reassembly_refuses_overlaps_and_keeps_its_bounds():
    from nodes.defrag import Reassembly
    parts = fragments6(big_ping6(), 1280)
    r = Reassembly(max_datagrams=4)
    assert r.add(parts[0], OUTSIDE, 0) is None
    moved = bytearray(parts[1])
    at = 14 + 40
    moved[at + 3] = (moved[at + 3] & 0x07) | 0x08  # its offset 8 bytes: into the first's bytes
    moved[at + 2] = 0
    assert r.add(bytes(moved), OUTSIDE, 0) == "frag_overlap" and not r.pending
    for i in range(10):  # first fragments that never complete: at most 4 datagrams wait
        frag = bytearray(parts[0])
        frag[at + 4:at + 8] = i.to_bytes(4, "big")
        r.add(bytes(frag), OUTSIDE, 0)
    assert len(r.pending) == 4 and r.counters["datagrams_evicted"] == 6
    r.expire(31.0)
    assert not r.pending and r.counters["datagrams_timed_out"] == 4
    whole = Reassembly()
    done = [whole.add(f, OUTSIDE, 0) for f in parts][-1]
    assert done.frame == big_ping6()  # the packet as it was before it was cut


def test_every_ipv6_fragment_is_forwarded_dropped_or_waiting(fw):
    import random
    fed = fragment_soup(
        fw, random.Random(4), 80,
        lambda rnd: fragments6(big_ping6(size=rnd.choice((1500, 3000, 6000))),
                               rnd.choice((600, 1280))),
        lambda f, i: f.__setitem__(slice(54 + 4, 54 + 8), (i % 15).to_bytes(4, "big")))
    forwarded = len(fw.take_fragments())
    assert forwarded + sum(fw.drops.values()) + fw.stats(60.0)["fragments_queued"] == fed
    fw.expire(1000.0)
    assert forwarded + sum(fw.drops.values()) == fed


class Session6:
    """An IPv6 FTP control connection through one engine."""

    def __init__(self, fw, t=0.0):
        self.fw, self.t, self.c, self.s = fw, t, 1001, 5001
        assert fw.process(tcp(CLIENT6, SERVER6, flags="S", seq=1000), OUTSIDE, t) == ACCEPT
        assert fw.process(tcp(SERVER6, CLIENT6, 21, 40000, "SA", 5000, 1001), INSIDE, t) == ACCEPT
        assert fw.process(tcp(CLIENT6, SERVER6, flags="A", seq=1001, ack=5001), OUTSIDE, t) \
            == ACCEPT

    def client(self, data):
        verdict = self.fw.process(tcp(CLIENT6, SERVER6, flags="PA", seq=self.c, ack=self.s,
                                      payload=data), OUTSIDE, self.t)
        self.c += len(data) if verdict != DROP else 0
        return verdict

    def server(self, data):
        verdict = self.fw.process(tcp(SERVER6, CLIENT6, 21, 40000, "PA", self.s, self.c, data),
                                  INSIDE, self.t)
        self.s += len(data) if verdict != DROP else 0
        return verdict


def test_eprt_2_admits_the_servers_connection_back_to_the_announced_port(fw):
    ftp = Session6(fw)
    assert ftp.client(b"EPRT |2|fd00::1|50000|\r\n") == ACCEPT
    (exp,) = [x for xs in fw.table.expectations.values() for x in xs]
    assert (exp.src, exp.dst, exp.dport) == (S6, C6, 50000)
    assert fw.process(tcp(SERVER6, CLIENT6, 20, 50000, "S"), INSIDE, 0) == ACCEPT
    assert fw.process(tcp(SERVER6, CLIENT6, 20, 50001, "S"), INSIDE, 0) == DROP


def test_epsv_over_ipv6_admits_the_client_to_the_servers_port(fw):
    ftp = Session6(fw)
    assert ftp.client(b"EPSV\r\n") == ACCEPT
    assert ftp.server(b"229 Entering Extended Passive Mode (|||50002|)\r\n") == ACCEPT
    assert fw.process(tcp(CLIENT6, SERVER6, 41000, 50002, "S"), OUTSIDE, 0) == ACCEPT


@pytest.mark.parametrize("line, speaker", [(b"PORT 10,0,0,1,195,80\r\n", "client"),
                                           (b"227 Entering Passive Mode (10,0,0,201,195,80)\r\n",
                                            "server")])
def test_port_and_227_announce_nothing_over_ipv6(fw, line, speaker):
    ftp = Session6(fw)
    assert getattr(ftp, speaker)(line) == ACCEPT  # passes, as in Linux, but expects nothing
    assert fw.table.n_expectations == 0 and fw.counters["ftp_ipv4_over_ipv6"] == 1


def test_an_eprt_of_the_other_family_is_dropped(fw):
    ftp = Session6(fw)
    assert ftp.client(b"EPRT |1|10.0.0.1|50000|\r\n") == DROP
    assert fw.drops["ftp_family_mismatch"] == 1 and fw.table.n_expectations == 0


def test_ipv6_records_round_trip_beside_ipv4_ones():
    conn6 = make_key(PROTO_TCP, C6, 40000, S6, 21)
    conn4 = make_key(PROTO_TCP, ip_bytes(CLIENT), 40000, ip_bytes(SERVER), 21)
    records = [
        (sp.R_ENTRY, {"key": conn6, "state": "ESTABLISHED", "owner": 2, "timeout": 30.0,
                      "helper": "ftp", "master": None}),
        (sp.R_ENTRY, {"key": make_key(PROTO_TCP, S6, 20, C6, 50000), "state": "SYN_SENT", "owner": 2,
                      "timeout": 120.0, "helper": None, "master": conn6}),
        (sp.R_ENTRY, {"key": conn4, "state": "ESTABLISHED", "owner": 1, "timeout": 30.0,
                      "helper": None, "master": None}),
        (sp.R_ENTRY_DEL, {"key": conn6, "owner": 2}),
        (sp.R_EXPECT, {"proto": 6, "src": None, "dst": S6, "dport": 50002, "owner": 2,
                       "timeout": 300.0, "master": conn6}),
        (sp.R_EXPECT_DEL, {"proto": 6, "src": S6, "dst": C6, "dport": 50000, "owner": 2}),
    ]
    key = b"k" * 32
    msg = sp.Message(sp.DATA, 2, 1, 77, seq=1, records=records)
    assert sp.decode(sp.encode(msg, key), key).records == records
    wire = sp.encode_record(*records[0])
    assert wire[0] == sp.R_ENTRY + sp.IPV6_RECORD and len(conn6) == 37
    answer = sp.Message(sp.HOME_ANSWER, 2, 1, 77, query=5, home=2, key=conn6)
    assert sp.decode(sp.encode(answer, key), key).key == conn6


def ipv6_net():
    net = Net(3, hold=True)
    for fw in net.fw.values():
        fw.rules = RULES
    return net


def test_an_ipv6_ftp_session_is_held_replicated_and_its_data_connection_admitted_elsewhere():
    net = ipv6_net()
    fw1 = net.fw[1]
    ftp = Session6(fw1, net.t)
    assert ftp.client(b"EPSV\r\n") == ACCEPT
    assert ftp.server(b"229 Entering Extended Passive Mode (|||50003|)\r\n") == HOLD
    net.run()
    assert len(fw1.release(net.t)) == 1
    assert [net.fw[i].table.n_expectations for i in (2, 3)] == [1, 1]
    assert net.fw[2].process(tcp(CLIENT6, SERVER6, 41000, 50003, "S"), OUTSIDE, net.t) == ACCEPT
    net.run()
    control, data = make_key(PROTO_TCP, C6, 40000, S6, 21), make_key(PROTO_TCP, C6, 41000, S6, 50003)
    for key, owner in ((control, "fw1"), (data, "fw2")):  # the owner and its backup (k 1)
        holders = [i for i in (1, 2, 3) if net.entries(i).get(key) == owner]
        assert len(holders) == 2 and int(owner[2]) in holders
