"""Stateful screening: TCP tracking, UDP/ICMP pseudo-connections, bad input."""
import pytest

from nodes.conntrack import CLOSE, ESTABLISHED, LAST_ACK, SYN_RECV, SYN_SENT, TIME_WAIT, UNREPLIED, Timeouts
from nodes.engine import ACCEPT, DROP, HOLD, INSIDE, OUTSIDE, GatewayEngine
from nodes.packet import key_tuple, make_key
from nodes.rules import RuleSet
from tests.unit.frames import CLIENT, SERVER, arp, fragment_soup, icmp, tcp, udp

RULES = RuleSet.from_text("""
10.0.0.0/25 10.0.0.201 tcp 21 accept helper=ftp
10.0.0.0/25 10.0.0.201 tcp 80 accept
10.0.0.0/25 any udp 53 accept
10.0.0.0/25 any icmp any accept
""")


@pytest.fixture
def fw():
    return GatewayEngine("fw1", RULES, Timeouts(established=100, syn_sent=5, close=1, udp_unreplied=3))


def handshake(fw, sport=40000, dport=80, t=0.0):
    assert fw.process(tcp(sport=sport, dport=dport, flags="S"), OUTSIDE, t) == ACCEPT
    assert fw.process(tcp(SERVER, CLIENT, dport, sport, "SA", 5000, 1001), INSIDE, t) == ACCEPT
    assert fw.process(tcp(sport=sport, dport=dport, flags="A", seq=1001, ack=5001), OUTSIDE, t) == ACCEPT
    entry = next(iter(fw.table.entries()))
    return entry


def test_handshake_establishes_and_both_directions_share_one_entry(fw):
    entry = handshake(fw)
    assert entry.state == ESTABLISHED and len(fw.table) == 1
    assert entry.packets == [2, 1] and entry.owner == "fw1" and entry.rule == 3
    assert fw.process(tcp(SERVER, CLIENT, 80, 40000, "A", 5001, 1001, b"data"), INSIDE, 1) == ACCEPT
    assert entry.packets == [2, 2]


def test_a_connection_opened_from_the_higher_address_is_one_entry_under_its_own_key(fw):
    """The table indexes an entry by its original direction's key: a connection whose
    originator has the higher address and port is found from both directions, and
    the index holds no second key for it (it did when indexed by the lower one)."""
    out, back = udp("10.0.0.100", "10.0.0.50", 5000, 53), udp("10.0.0.50", "10.0.0.100", 53, 5000)
    assert fw.process(out, OUTSIDE, 0) == ACCEPT and fw.process(back, INSIDE, 0) == ACCEPT
    assert fw.process(out, OUTSIDE, 1) == ACCEPT
    entry = next(iter(fw.table.entries()))
    assert len(fw.table) == 1 and entry.state == "REPLIED" and entry.packets == [2, 1]
    assert key_tuple(entry.orig)[1] == bytes([10, 0, 0, 100])
    assert next(iter(fw.table.by_key)) is entry.orig
    assert fw.table.lookup(entry.reply) == (entry, 1)


def test_a_connection_holds_no_more_until_it_has_some(fw):
    """What few connections have (the master of a related one, helper state, expectations,
    additional information, seen-here) is made only when one of it is set: an entry of
    an ordinary connection is the 298 bytes of make bench's memory figure, not 370."""
    entry = handshake(fw)
    assert entry.more is None
    assert (entry.related_to, entry.helper_state, entry.expectations, entry.extra,
            entry.seen_here) == (None, None, None, None, False)
    entry.extra = None  # setting a default keeps nothing
    assert entry.more is None
    entry.extra = {"nat": "10.9.0.1"}
    assert entry.more is not None and entry.extra == {"nat": "10.9.0.1"}
    assert entry.as_dict(1.0)["extra"] == {"nat": "10.9.0.1"}


def test_only_the_opening_packet_is_checked_against_rules(fw):
    handshake(fw)
    fw.rules = RuleSet.from_text("")  # a new policy denies everything...
    assert fw.process(tcp(flags="A", seq=1001, dport=80), OUTSIDE, 1) == ACCEPT  # ...but state rules
    assert fw.process(tcp(flags="S", sport=40001, dport=80), OUTSIDE, 1) == DROP


def test_unsolicited_syn_and_stray_ack_are_dropped_and_counted(fw):
    assert fw.process(tcp(SERVER, CLIENT, 22, 40000, "S"), INSIDE, 0) == DROP
    assert fw.process(tcp(flags="A", dport=80), OUTSIDE, 0) == DROP
    assert fw.process(tcp(flags="SA", dport=80), OUTSIDE, 0) == DROP
    assert fw.drops == {"policy": 1, "tcp_no_entry": 2}
    assert len(fw.table) == 0
    assert [e[1] for e in fw.drain_events()] == ["drop", "drop", "drop"]


def test_data_before_synack_is_invalid(fw):
    fw.process(tcp(flags="S", dport=80), OUTSIDE, 0)
    assert fw.process(tcp(flags="A", dport=80, payload=b"x"), OUTSIDE, 0) == DROP
    assert fw.drops["tcp_invalid_state"] == 1


def test_fin_both_ways_then_time_wait_and_port_reuse(fw):
    entry = handshake(fw)
    fw.process(tcp(flags="FA", dport=80, seq=1001), OUTSIDE, 1)
    fw.process(tcp(SERVER, CLIENT, 80, 40000, "FA", 5001, 1002), INSIDE, 1)
    assert entry.state == LAST_ACK
    fw.process(tcp(flags="A", dport=80, seq=1002, ack=5002), OUTSIDE, 1)
    assert entry.state == TIME_WAIT
    assert fw.process(tcp(flags="S", dport=80, seq=9000), OUTSIDE, 2) == ACCEPT
    new, _ = fw.table.lookup(entry.orig)
    assert new is not entry and new.state == SYN_SENT


def test_rst_closes_and_entry_times_out(fw):
    entry = handshake(fw)
    fw.process(tcp(SERVER, CLIENT, 80, 40000, "R", 5001), INSIDE, 1)
    assert entry.state == CLOSE
    assert fw.expire(1.5) == 0 and fw.expire(2.5) == 1
    assert len(fw.table) == 0
    assert fw.process(tcp(flags="A", dport=80), OUTSIDE, 3) == DROP


def test_idle_entry_is_gone_on_lookup(fw):
    fw.process(tcp(flags="S", dport=80), OUTSIDE, 0)
    assert fw.process(tcp(SERVER, CLIENT, 80, 40000, "SA", 1, 1001), INSIDE, 6) == DROP
    assert fw.drops["tcp_no_entry"] == 1


def test_syn_recv_state(fw):
    fw.process(tcp(flags="S", dport=80), OUTSIDE, 0)
    fw.process(tcp(SERVER, CLIENT, 80, 40000, "SA", 1, 1001), INSIDE, 0)
    entry = next(iter(fw.table.entries()))
    assert entry.state == SYN_RECV


def test_udp_pseudo_connection(fw):
    assert fw.process(udp(), OUTSIDE, 0) == ACCEPT
    assert fw.process(udp(SERVER, CLIENT, 53, 5000), INSIDE, 1) == ACCEPT
    assert fw.process(udp(SERVER, CLIENT, 53, 5001), INSIDE, 1) == DROP  # other port: no entry
    assert fw.process(udp(dport=54), OUTSIDE, 1) == DROP


def test_unreplied_udp_times_out(fw):
    fw.process(udp(), OUTSIDE, 0)
    assert fw.process(udp(SERVER, CLIENT, 53, 5000), INSIDE, 3.5) == DROP


def test_icmp_echo_pseudo_connection(fw):
    assert fw.process(icmp(SERVER, CLIENT, type=0), INSIDE, 0) == DROP  # reply without request
    assert fw.process(icmp(), OUTSIDE, 0) == ACCEPT
    assert fw.process(icmp(SERVER, CLIENT, type=0), INSIDE, 0) == ACCEPT
    assert fw.process(icmp(SERVER, CLIENT, type=0, id=8), INSIDE, 0) == DROP
    assert fw.process(icmp(SERVER, CLIENT, type=8), INSIDE, 0) == DROP  # inside may not ping out


def icmp_error(quoted: bytes, src=SERVER, dst=CLIENT, type=3, code=3, quote=8) -> bytes:
    """An ICMP error from ``src`` to ``dst`` quoting the IP packet of frame ``quoted``
    (its header and the first ``quote`` bytes after it: 8, as routers send)."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    inner = quoted[14:14 + 20 + quote]
    return bytes(Ether() / IP(src=src, dst=dst) / ICMP(type=type, code=code) / inner)


def test_icmp_errors_are_admitted_as_related_to_their_connection_and_only_then():
    """Linux conntrack's RELATED: a port unreachable or a fragmentation needed is let
    through for the connection it quotes, whatever the rules say of ICMP from there
    (here none lets the inside send ICMP out); an error quoting no connection, or
    sent to another host than the quoted packet's sender, is dropped."""
    fw = GatewayEngine("fw1", RuleSet.from_text("10.0.0.0/25 any udp 53 accept\n"
                                                "10.0.0.0/25 10.0.0.201 tcp 80 accept\n"))
    query = udp()
    assert fw.process(query, OUTSIDE, 0) == ACCEPT
    assert fw.process(icmp_error(query), INSIDE, 0.1) == ACCEPT  # port unreachable
    syn = tcp(dport=80)
    assert fw.process(syn, OUTSIDE, 0.2) == ACCEPT
    reply = tcp(SERVER, CLIENT, 80, 40000, "SA", 5000, 1001)
    assert fw.process(reply, INSIDE, 0.2) == ACCEPT
    frag_needed = icmp_error(syn, src="10.0.0.254", type=3, code=4)  # a router on the path
    assert fw.process(frag_needed, INSIDE, 0.3) == ACCEPT
    assert fw.process(icmp_error(reply, src=CLIENT, dst=SERVER), OUTSIDE, 0.3) == ACCEPT
    assert fw.counters["icmp_errors_related"] == 3
    stray = udp(sport=6000)  # no connection
    assert fw.process(icmp_error(stray), INSIDE, 0.4) == DROP
    assert fw.process(icmp_error(query, dst="10.0.0.9"), INSIDE, 0.4) == DROP
    assert fw.process(icmp_error(query, quote=4), INSIDE, 0.4) == DROP
    assert fw.drops == {"icmp_error_no_entry": 1, "icmp_error_misdirected": 1,
                        "icmp_error_truncated": 1}
    bad = bytearray(icmp_error(query))
    bad[36] ^= 0xFF  # the ICMP checksum
    assert fw.process(bytes(bad), INSIDE, 0.5) == DROP and fw.drops["bad_checksum"] == 1
    assert fw.process(icmp_error(query), INSIDE, 1000.0) == DROP  # the connection timed out


def test_arp_passes_and_other_ethertypes_drop(fw):
    assert fw.process(arp(), OUTSIDE, 0) == ACCEPT
    vlan = bytes(12) + b"\x81\x00" + bytes(40)
    assert fw.process(vlan, OUTSIDE, 0) == DROP
    assert fw.drops["ethertype_vlan"] == 1
    not_ipv6 = bytes(12) + b"\x86\xdd" + bytes(40)  # IPv6's EtherType, version 0
    assert fw.process(not_ipv6, OUTSIDE, 0) == DROP
    assert fw.drops["bad_ip_version"] == 1


def test_drop_reasons_from_outside_frames_are_a_fixed_set(fw):
    """Each unknown ethertype was a reason of its own: up to 65,534 metric series."""
    for et in range(0x9000, 0x9400):
        fw.process(bytes(12) + et.to_bytes(2, "big") + bytes(40), OUTSIDE, 0)
    assert dict(fw.drops) == {"ethertype_other": 0x400}


def _mangle(frame: bytes, offset: int, value: int) -> bytes:
    return frame[:offset] + bytes([value]) + frame[offset + 1:]


@pytest.mark.parametrize("frame, reason", [
    (b"\x00" * 10, "truncated_eth"),
    (tcp()[:30], "truncated_ip"),
    (_mangle(tcp(), 14, 0x44), "bad_ihl"),
    (_mangle(tcp(), 14, 0x65), "bad_ip_version"),
    (tcp()[:-4], "truncated_ip"),
    (_mangle(tcp(), 14 + 20 + 12, 0x30), "bad_tcp_doff"),
    (_mangle(tcp(), 14 + 20 + 12, 0xF0), "bad_tcp_doff"),
    (_mangle(tcp(), 14 + 6, 0x20), "frag_bad_length"),  # MF on 20 bytes: not 8-byte units
    (bytes(tcp())[:14 + 20 + 10], "truncated_ip"),
])
def test_malformed_frames_are_dropped_by_reason(fw, frame, reason):
    assert fw.process(frame, OUTSIDE, 0) == DROP
    assert fw.drops == {reason: 1}
    assert len(fw.table) == 0


def fragments(frame: bytes, size: int) -> list[bytes]:
    """The IP packet of ``frame`` cut into fragments of ``size`` payload bytes (scapy)."""
    from scapy.layers.inet import IP, fragment
    from scapy.layers.l2 import Ether
    eth = Ether(frame)
    return [bytes(Ether(src=eth.src, dst=eth.dst) / f) for f in fragment(eth[IP], size)]


def big_ping(src=CLIENT, dst=SERVER, type=8, size=3000) -> bytes:
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether
    return bytes(Ether() / IP(src=src, dst=dst, id=77) / ICMP(type=type, id=9) / bytes(size))


def test_fragments_are_judged_as_their_datagram_and_go_out_as_they_came(fw):
    """Linux reassembles before conntrack (nf_defrag); a ping -s 3000 through an
    allowing rule lost every fragment here before."""
    parts = fragments(big_ping(), 1480)
    assert len(parts) == 3
    assert [fw.process(f, OUTSIDE, 0) for f in parts] == [HOLD] * 3  # nothing goes alone
    assert fw.take_fragments() == [(f, OUTSIDE) for f in parts]  # as they came, in order
    assert len(fw.table) == 1 and fw.packets_in[OUTSIDE] == 3
    back = fragments(big_ping(SERVER, CLIENT, type=0), 1480)
    for f in reversed(back):  # out of order is fine
        fw.process(f, INSIDE, 0.1)
    assert sorted(f for f, _ in fw.take_fragments()) == sorted(back)
    assert fw.defrag.counters["datagrams_reassembled"] == 2
    denied = fragments(big_ping(SERVER, CLIENT, type=8), 1480)  # inside may not ping out
    assert [fw.process(f, INSIDE, 0.2) for f in denied][-1] == DROP
    assert fw.take_fragments() == [] and fw.drops["policy"] == 3  # every fragment counted


def test_fragment_reassembly_is_bounded_and_refuses_overlaps():
    from nodes.defrag import Reassembly
    parts = fragments(big_ping(), 1480)
    r = Reassembly(max_bytes=20_000, timeout=2.0)
    assert r.add(parts[0], OUTSIDE, 0) is None
    assert r.add(parts[0], OUTSIDE, 0) == "frag_duplicate" and len(r.pending) == 1
    moved = bytearray(parts[1])
    moved[14 + 6:14 + 8] = (0x2000 | 100).to_bytes(2, "big")  # offset 800: over the first
    assert r.add(bytes(moved), OUTSIDE, 0) == "frag_overlap" and not r.pending
    r.add(parts[0], OUTSIDE, 0)
    r.expire(2.5)  # not completed in time
    assert not r.pending and r.counters["datagrams_timed_out"] == 1 and r.bytes == 0
    for i in range(100):  # a flood of first fragments that never complete
        first = bytearray(parts[0])
        first[14 + 4:14 + 6] = i.to_bytes(2, "big")  # another datagram each
        r.add(bytes(first), OUTSIDE, 3.0)
    assert r.bytes <= 20_000 and r.counters["datagrams_evicted"] >= 80
    r2 = Reassembly()
    done = [r2.add(f, OUTSIDE, 0) for f in parts][-1]
    assert done.frame == big_ping()  # the datagram as it was sent, checksum and all


def test_every_fragment_is_forwarded_dropped_or_waiting(fw):
    """No fragment goes uncounted: those dropped with their datagram (an overlap, an
    eviction, a timeout) are counted by reason, as a single packet's drop is."""
    import random
    fed = fragment_soup(
        fw, random.Random(3), 120,
        lambda rnd: fragments(big_ping(size=rnd.choice((1000, 3000, 6000))),
                              rnd.choice((256, 512))),
        lambda f, i: f.__setitem__(slice(14 + 4, 14 + 6), (i % 20).to_bytes(2, "big")),
        dup=0.05)  # datagrams collide and overlap, some fragments come twice
    forwarded = len(fw.take_fragments())
    stats = fw.stats(60.0)
    assert forwarded + sum(fw.drops.values()) + stats["fragments_queued"] == fed
    fw.expire(1000.0)  # the rest time out
    assert fw.stats(1000.0)["fragments_queued"] == 0
    assert forwarded + sum(fw.drops.values()) == fed


def test_random_garbage_never_raises(fw):
    import random
    rnd = random.Random(1)
    base = tcp(payload=b"PORT 10,0,0,1,4,1\r\n")
    for _ in range(3000):
        frame = bytearray(base)
        for _ in range(rnd.randint(1, 8)):
            frame[rnd.randrange(len(frame))] = rnd.randrange(256)
        frame = bytes(frame[:rnd.randint(0, len(frame))])
        assert fw.process(frame, rnd.randint(0, 1), 0) in (ACCEPT, DROP, HOLD)


def established(fw, sport):
    fw.process(tcp(flags="S", sport=sport, dport=80), OUTSIDE, 0)
    fw.process(tcp(SERVER, CLIENT, 80, sport, "SA", 5000, 1001), INSIDE, 0)
    fw.process(tcp(flags="A", sport=sport, dport=80, seq=1001, ack=5001), OUTSIDE, 0)


def test_a_full_table_of_established_connections_drops_new_ones():
    fw = GatewayEngine("fw1", RULES, max_entries=1)
    established(fw, 1)
    assert fw.process(tcp(flags="S", sport=2, dport=80), OUTSIDE, 0) == DROP
    assert fw.drops["table_full"] == 1


def test_a_syn_flood_gives_way_to_a_legitimate_connection_by_early_drop():
    """Issue 14: a flood filled the table and a legitimate SYN got table_full.
    As Linux conntrack, the oldest unassured entry makes room; assured ones stay."""
    fw = GatewayEngine("fw1", RULES, max_entries=100)
    for port in range(1, 11):
        established(fw, port)
    for port in range(1000, 1200):  # the flood: SYNs that are never answered
        assert fw.process(tcp(flags="S", sport=port, dport=80), OUTSIDE, 0) == ACCEPT
    assert len(fw.table) == 100 and fw.counters["early_drops"] == 110
    assert fw.process(tcp(flags="S", sport=40000, dport=80), OUTSIDE, 0) == ACCEPT
    states = [e.state for e in fw.table.entries()]
    assert states.count("ESTABLISHED") == 10  # no assured connection was evicted
    assert fw.table.n_unassured() == 90
    assert "table_full" not in fw.drops


def test_a_syn_with_a_bad_checksum_creates_no_state():
    """Issue 14: it created an entry, was replicated and forwarded. Linux conntrack
    verifies checksums (nf_conntrack_checksum) and keeps no state for it."""
    fw = GatewayEngine("fw1", RULES)
    bad = bytearray(tcp(flags="S", dport=80))
    bad[-3] ^= 0x40  # the TCP checksum's low byte (a window bit would do as well)
    assert fw.process(bytes(bad), OUTSIDE, 0) == DROP
    assert len(fw.table) == 0 and fw.drops["bad_checksum"] == 1
    off = GatewayEngine("fw1", RULES, checksum=False)  # the switch to turn it off
    assert off.process(bytes(bad), OUTSIDE, 0) == ACCEPT and len(off.table) == 1


def test_refused_openings_are_logged_at_most_drop_log_rate_a_second():
    fw = GatewayEngine("fw1", RULES, drop_log_rate=50)
    for port in range(300):
        fw.process(tcp(flags="S", sport=port, dport=9), OUTSIDE, 0.5)
    events = [e for e in fw.drain_events() if e[1] == "drop"]
    assert len(events) == 50 and fw.counters["drop_events_suppressed"] == 250
    assert fw.drops["policy"] == 300  # every drop is counted, only the log is bounded
    fw.process(tcp(flags="S", sport=1, dport=9), OUTSIDE, 1.6)
    assert [e[1] for e in fw.drain_events()] == ["drop"]


def test_early_drop_looks_at_a_bounded_range_of_candidates():
    """Found by the SYN flood: early drop copied every unassured entry for each new
    connection into a full table, and a flooded node stopped answering."""
    from nodes import conntrack
    fw = GatewayEngine("fw1", RULES, max_entries=5000)
    for port in range(1, 5001):
        fw.process(tcp(flags="S", sport=port, dport=80), OUTSIDE, 0)
    before = fw.table.scanned
    for port in range(60000, 60100):
        assert fw.process(tcp(flags="S", sport=port, dport=80), OUTSIDE, 0) == ACCEPT
    assert fw.table.scanned - before <= 100 * conntrack.EVICTION_RANGE  # not 100 x 5000
    assert len(fw.table) == 5000 and fw.counters["early_drops"] == 100


# -- the expiry sweep, a slice at a time (the node's housekeeping) ---------------
def fill(fw, n, expires, slice_=100, rounds=4):
    """n UDP entries of fw1 that time out at ``expires``; a sweep of ``slice_`` entries
    a round at least, a pass in ``rounds`` rounds at most."""
    fw.table.sweep_slice, fw.table.sweep_rounds = slice_, rounds
    for i in range(n):
        key = make_key(17, bytes([10, 0, 0, i % 100]), 1024 + i // 100, bytes([10, 0, 0, 201]), 53)
        fw.table.new_entry(key, UNREPLIED, expires - 1, "fw1").expires = expires
    return list(fw.table.entries())


def test_the_defaults_sweep_a_table_of_a_million_in_ten_seconds_of_rounds():
    from nodes.conntrack import SWEEP_ROUNDS, SWEEP_SLICE
    from nodes.shell.node import HOUSEKEEPING
    assert SWEEP_ROUNDS * HOUSEKEEPING <= 10 and 1_000_000 // SWEEP_ROUNDS <= 100_000
    assert SWEEP_SLICE >= 10_000  # tables of the tests and labs: a whole pass each round


@pytest.mark.parametrize("n, per_round, rounds", [(250, 100, 3), (1000, 251, 4)])
def test_a_round_of_the_incremental_sweep_looks_at_a_bounded_slice(fw, n, per_round, rounds):
    fill(fw, n, expires=10.0)
    gone = [fw.expire(11.0, incremental=True) for _ in range(rounds)]
    assert gone[:-1] == [per_round] * (rounds - 1) and sum(gone) == n  # a pass: all of them
    assert len(fw.table) == 0 and fw.counters["entries_expired"] == n
    assert sum(1 for e in fw.drain_events() if e[1] == "destroy") == n
    assert fw.expire(11.0, incremental=True) == 0


def test_a_small_table_is_swept_whole_each_round(fw):
    fill(fw, 80, expires=10.0)
    assert fw.expire(11.0, incremental=True) == 80 and len(fw.table) == 0


def test_the_incremental_sweep_destroys_each_entry_once_and_spares_what_changed_meanwhile(fw):
    first = fill(fw, 300, expires=10.0)
    assert fw.expire(11.0, incremental=True) == 100  # the pass is under way
    later, closed, reused = first[-1], first[-2], first[-3]
    later.expires = 50.0  # a packet refreshed it
    fw.table.remove(closed)  # gone another way (closed, or a copy's owner said so)
    fw.table.remove(reused)  # and its key reused by a new connection
    fresh = fw.table.new_entry(reused.orig, UNREPLIED, 9.0, "fw1")
    fresh.expires = 10.5
    assert fw.expire(11.0, incremental=True) + fw.expire(11.0, incremental=True) == 197
    assert set(fw.table.entries()) == {later, fresh}
    assert fw.counters["entries_expired"] == 300 - 3
    assert fw.expire(20.0, incremental=True) == 1  # the new one's turn: the next pass
    assert list(fw.table.entries()) == [later]


def test_an_expired_entry_the_sweep_has_not_reached_is_gone_for_its_packets(fw):
    last = fill(fw, 300, expires=10.0)[-1]
    fw.expire(11.0, incremental=True)
    assert fw.table.lookup(last.orig)[0] is last  # not swept yet
    _, src, sport, dst, dport = key_tuple(last.orig)
    frame = udp(src=".".join(map(str, src)), dst=".".join(map(str, dst)), sport=sport, dport=dport)
    assert fw.process(frame, OUTSIDE, 11.0) == ACCEPT  # a new connection, not the stale one
    assert fw.table.lookup(last.orig)[0] not in (None, last)
