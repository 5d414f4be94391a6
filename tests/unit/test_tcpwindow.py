"""TCP window tracking (nodes/tcpwindow.py) in the gateway engine, and its replication.

Each case is one of Linux's (net/netfilter/nf_conntrack_proto_tcp.c): the bounds
I-IV, window scaling from the SYN options, SACK, the slack of IGNORE, the
``liberal`` and ``loose`` switches, and sequence numbers that wrap.
"""
import pytest

from nodes.engine import ACCEPT, DROP, INSIDE, OUTSIDE, GatewayEngine
from nodes.tcpwindow import BE_LIBERAL, SACK_PERM, WINDOW_SCALE, before
from tests.unit.cluster_sim import RULES, Net
from tests.unit.frames import CLIENT, SERVER, tcp

SCALED = [("WScale", 7), ("SAckOK", b"")]


class Conn:
    """One HTTP-like connection through ``fw``: the client sends, the server acknowledges."""

    def __init__(self, fw, c0=1000, s0=5000, win=1000, client_opts=SCALED, server_opts=SCALED,
                 t=0.0):
        self.fw, self.c, self.s, self.win, self.t = fw, c0 + 1, s0 + 1, win, t
        assert self.send(tcp(flags="S", seq=c0, dport=80, window=win, options=client_opts))
        assert self.back(tcp(SERVER, CLIENT, 80, 40000, "SA", s0, c0 + 1, window=win,
                             options=server_opts))
        assert self.send(tcp(flags="A", seq=self.c, ack=self.s, dport=80, window=win))
        assert self.server_ack()  # the server's first ACK: the client's window, scaled

    def send(self, frame):
        return self.fw.process(frame, OUTSIDE, self.t) == ACCEPT

    def back(self, frame):
        return self.fw.process(frame, INSIDE, self.t) == ACCEPT

    def data(self, n=1000, seq=None, flags="PA"):
        """The client sends ``n`` bytes at ``seq`` (default: the next ones)."""
        at = self.c if seq is None else seq
        ok = self.send(tcp(flags=flags, seq=at & 0xFFFFFFFF, ack=self.s, dport=80,
                           window=self.win, payload=b"x" * n))
        if ok and seq is None:
            self.c = (self.c + n) & 0xFFFFFFFF
        return ok

    def server_ack(self, ack=None, options=()):
        return self.back(tcp(SERVER, CLIENT, 80, 40000, "A", self.s,
                             (self.c if ack is None else ack) & 0xFFFFFFFF, window=self.win,
                             options=options))

    def entry(self):
        return next(iter(self.fw.table.entries()))


@pytest.fixture
def fw():
    return GatewayEngine("fw1", RULES)


def test_segments_in_the_window_pass_and_the_window_follows_them(fw):
    conn = Conn(fw)
    for _ in range(50):  # 50 kB, far more than the unscaled window
        assert conn.data() and conn.server_ack()
    orig, reply = conn.entry().window
    assert orig.end == conn.c and orig.scale == 7 and reply.scale == 7
    assert orig.maxend == (conn.c + 1000 * 128) & 0xFFFFFFFF  # ack + window << scale
    assert fw.drops == {}


def test_a_segment_past_the_receivers_window_is_dropped_and_counted(fw):
    conn = Conn(fw)
    assert not conn.data(seq=conn.c + 3 * 128000)
    assert fw.drops == {"tcp_out_of_window": 1}
    assert conn.data()  # the connection itself goes on


def test_an_ack_of_data_never_sent_is_dropped(fw):
    conn = Conn(fw)
    assert conn.data()
    assert not conn.server_ack(ack=conn.c + 5000)
    assert fw.drops == {"tcp_out_of_window": 1}


def test_an_out_of_window_rst_does_not_close_the_connection(fw):
    conn = Conn(fw)
    assert not conn.send(tcp(flags="R", seq=conn.c + 10 ** 6, dport=80))
    assert conn.entry().state == "ESTABLISHED"
    assert conn.send(tcp(flags="R", seq=conn.c, dport=80))  # in the window: it closes
    assert conn.entry().state == "CLOSE"


def test_window_scaling_needs_both_ends_to_offer_it(fw):
    """RFC 7323: 100 kB ahead is inside the window scaled by 2**7 and far outside the
    unscaled one, where the server did not offer scaling."""
    scaled = Conn(fw)
    assert scaled.data(seq=scaled.c + 100_000)
    other = GatewayEngine("fw1", RULES)
    conn = Conn(other, server_opts=[("SAckOK", b"")])
    assert conn.entry().window[0].scale == conn.entry().window[1].scale == 0
    assert not conn.data(seq=conn.c + 100_000)
    assert other.drops == {"tcp_out_of_window": 1}


def test_sack_blocks_are_tolerated_and_checked(fw):
    conn = Conn(fw)
    first = conn.c
    assert conn.data() and conn.data()
    block = ("SAck", (first + 1000, first + 2000))  # the first segment lost, the second seen
    assert conn.server_ack(ack=first, options=[block])
    beyond = ("SAck", (first + 2000, first + 9000))  # acknowledges what was never sent
    assert not conn.server_ack(ack=first, options=[beyond])
    assert fw.drops == {"tcp_out_of_window": 1}


def test_an_old_retransmission_passes_but_changes_nothing(fw):
    """Linux's IGNORE: data acknowledged long ago (bound II) is passed, not tracked."""
    conn = Conn(fw, client_opts=[], server_opts=[])  # no scaling: a window of 1000 bytes
    first = conn.c
    for _ in range(5):
        assert conn.data() and conn.server_ack()
    before_state = conn.entry().window[0].fields()
    assert conn.data(seq=first)
    assert fw.counters["tcp_window_ignored"] == 1 and fw.drops == {}
    assert conn.entry().window[0].fields() == before_state


def test_liberal_passes_what_strict_drops():
    fw = GatewayEngine("fw1", RULES, tcp_liberal=True)
    conn = Conn(fw)
    assert conn.data(seq=conn.c + 3 * 128000)
    assert conn.server_ack(ack=conn.c + 10 ** 6)
    assert fw.drops == {}


def test_loose_picks_up_a_connection_mid_stream_and_tracks_it_liberally():
    strict = GatewayEngine("fw1", RULES)
    mid = tcp(flags="A", seq=77777, ack=88888, dport=80)
    assert strict.process(mid, OUTSIDE, 0.0) == DROP
    assert strict.drops == {"tcp_no_entry": 1}
    fw = GatewayEngine("fw1", RULES, tcp_loose=True)
    assert fw.process(mid, OUTSIDE, 0.0) == ACCEPT
    (entry,) = fw.table.entries()
    assert entry.state == "ESTABLISHED" and fw.counters["tcp_picked_up"] == 1
    assert all(seen.flags & BE_LIBERAL for seen in entry.window)  # its scale is unknowable
    back = tcp(SERVER, CLIENT, 80, 40000, "A", 88888, 77777, payload=b"y" * 500)
    assert fw.process(back, INSIDE, 0.0) == ACCEPT
    rst_only = tcp(flags="R", seq=1, dport=81)
    assert fw.process(rst_only, OUTSIDE, 0.0) == DROP  # only a bare ACK picks up


def test_sequence_numbers_wrap(fw):
    conn = Conn(fw, c0=2 ** 32 - 3000)
    for _ in range(6):  # across 2**32
        assert conn.data() and conn.server_ack()
    assert conn.c < 10_000
    assert not conn.data(seq=conn.c + 3 * 128000)
    assert before(2 ** 32 - 10, 5) and not before(5, 2 ** 32 - 10)


# -- replication -----------------------------------------------------------------------


def crash_over(window_sync, segments=20, mode="ondemand"):
    """fw1's connection, ``segments`` kB into a transfer, when fw1 crashes; fw2 adopts
    it. Returns the connection (now through fw2) and the cluster."""
    net = Net(2, mode=mode, window_sync=window_sync, interval=0.5)
    conn = Conn(net.fw[1], client_opts=[], server_opts=[], win=2000)
    net.run()
    for _ in range(segments):
        assert conn.data() and conn.server_ack()
        net.run(0.001, settle=False)
    net.run()
    net.down.add(1)
    net.run(0.3)
    assert net.fw[2].table.by_key and net.sync[2].counters["entries_adopted"] == 1
    conn.fw = net.fw[2]
    return conn, net


def test_window_changes_replicated_on_every_change_let_the_backup_take_over():
    conn, net = crash_over("change")
    assert net.sync[1].counters["window_updates"] >= 20
    assert conn.data() and conn.server_ack()
    assert net.fw[2].drops == {}


def test_window_changes_coalesce_to_one_record_a_flush():
    net = Net(2, window_sync="change")
    conn = Conn(net.fw[1], client_opts=[], server_opts=[], win=2000)
    net.run()
    sent = net.sync[1].counters["window_updates"]
    for _ in range(10):
        assert conn.data() and conn.server_ack()
    net.run()
    assert net.sync[1].counters["window_updates"] == sent + 1
    copy = next(iter(net.fw[2].table.entries()))
    assert [s.fields() for s in copy.window] == [s.fields() for s in conn.entry().window]


def test_a_state_change_after_a_window_move_sends_one_record():
    """The window moves, then the state changes before the flush (the FIN): the state's
    record is made when packed and carries the window, so no second record goes."""
    net = Net(2, window_sync="change")
    conn = Conn(net.fw[1], client_opts=[], server_opts=[], win=2000)
    net.run()
    before = net.sync[1].counters["records_sent"]
    assert conn.data()
    entry = conn.entry()
    assert entry.orig in net.sync[1].windows  # the segment moved the window
    net.sync[1]._queue("update", entry, net.t)  # a state change's record, before the flush
    net.run()
    assert net.sync[1].counters["records_sent"] == before + 1
    copy = next(iter(net.fw[2].table.entries()))
    assert [s.fields() for s in copy.window] == [s.fields() for s in entry.window]


def test_a_stale_window_stalls_the_connection_on_the_backup():
    """On demand, window_sync "schedule" sends the window only with a state change: the
    copy's is as of the handshake, 20 kB behind, and every segment fails bound I."""
    conn, net = crash_over("schedule")
    assert not conn.data() and not conn.data()
    assert net.fw[2].drops == {"tcp_out_of_window": 2}


def test_periodic_rounds_carry_the_window_on_schedule():
    net = Net(2, mode="periodic", window_sync="schedule", interval=0.5)
    conn = Conn(net.fw[1], client_opts=[], server_opts=[], win=2000)
    net.run(0.6)
    for _ in range(5):
        assert conn.data() and conn.server_ack()
    copy = next(iter(net.fw[2].table.entries()))
    assert copy.window[0].end != conn.c  # not yet: the round is due in 0.5 s
    net.run(0.6)
    assert copy.window[0].end == conn.c


def test_scales_only_let_the_backup_learn_the_window_from_the_next_segments():
    conn, net = crash_over("scale")
    copy = next(iter(net.fw[2].table.entries()))
    assert all(seen.maxwin == 0 for seen in copy.window)
    assert conn.data() and conn.server_ack() and conn.data()
    assert net.fw[2].drops == {} and copy.window[0].end == conn.c


def test_a_backup_that_learns_from_a_retransmission_refuses_the_later_acks():
    """Linux's pick-up of a direction it has not seen (maxwin 0) takes the first segment's
    end as the sender's; when that segment is a retransmission of data the receiver has
    had, the receiver's acknowledgements are beyond it (bound III) and dropped, and the
    sender, retransmitting the same segment, never learns they were sent: the connection
    stalls. This is why a copy with window scales only can stall after a failover."""
    conn, net = crash_over("scale")
    assert conn.data(seq=conn.c - 3000)  # the first segment fw2 sees: an old one again
    assert not conn.server_ack() and conn.data(seq=conn.c - 3000) and not conn.server_ack()
    assert net.fw[2].drops == {"tcp_out_of_window": 2}


def test_scales_only_carry_the_scale_a_backup_cannot_learn():
    net = Net(2, window_sync="scale")
    Conn(net.fw[1])
    net.run()
    copy = next(iter(net.fw[2].table.entries()))
    assert [(s.scale, s.flags & WINDOW_SCALE) for s in copy.window] == [(7, 1), (7, 1)]


def test_without_window_state_a_copy_is_not_window_checked():
    conn, net = crash_over("off")
    assert next(iter(net.fw[2].table.entries())).window is None
    assert conn.data(seq=conn.c + 10 ** 6)  # what a strict node would drop


def test_the_switches_are_set_at_run_time_and_a_bad_value_is_one_line():
    from nodes.settings import SettingsError, firewall_change
    assert firewall_change("tcp_liberal=on mode=periodic") == ({"tcp_liberal": True},
                                                               "mode=periodic")
    assert firewall_change("tcp_loose=0") == ({"tcp_loose": False}, "")
    with pytest.raises(SettingsError, match="tcp_liberal = 'maybe' is not on or off"):
        firewall_change("tcp_liberal=maybe")


def test_the_fast_path_decides_and_updates_as_linuxs_whole_procedure():
    """``check``'s fast path against ``in_window`` on 40,000 seeded random segments
    near each of the window's bounds and across 2**32, in either direction, with FIN, with SACK
    blocks and with windows up to and past 2**31: the same verdicts, the same state."""
    import random
    from nodes.packet import Packet
    from nodes.tcpwindow import Seen, check, highest_sack, in_window
    rnd = random.Random(16)
    verdicts, sacked = set(), 0
    maxwins = (1, 1000, 70000, 2 ** 30, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1)
    for _ in range(40_000):
        base = rnd.choice((rnd.randrange(2 ** 32), rnd.randrange(2 ** 32 - 100_000, 2 ** 32)))
        spread = rnd.choice((5000, 2 ** 31))
        state = [Seen(*((base + rnd.randrange(-spread, spread)) & 0xFFFFFFFF for _ in range(2)),
                      rnd.choice(maxwins), rnd.choice((0, 7, 14)), rnd.choice((0, SACK_PERM)))
                 for _ in range(2)]
        direction = rnd.randrange(2)
        sender, receiver = state[direction], state[direction ^ 1]
        # near each bound: the sender's end and max end, half the sequence space away
        anchor = rnd.choice((sender.end, sender.end, sender.maxend, sender.end - 2 ** 31,
                             sender.end - receiver.maxwin))
        seq = (anchor + rnd.randrange(-80000, 80000)) & 0xFFFFFFFF
        ack = (rnd.choice((receiver.end, receiver.end, receiver.end - sender.maxwin))
               + rnd.randrange(-80000, 80000)) & 0xFFFFFFFF
        size = rnd.choice((0, 1448, 65000))
        win, flags = rnd.randrange(65536), rnd.choice((0x10, 0x18, 0x11))
        options = b""
        if rnd.random() < 0.3:  # NOP NOP SACK with one block past the ack
            left = (ack + rnd.randrange(0, 90000)) & 0xFFFFFFFF
            right = (left + rnd.randrange(1, 90000)) & 0xFFFFFFFF
            options = b"\x01\x01\x05\x0a" + left.to_bytes(4, "big") + right.to_bytes(4, "big")
        frame = bytes(54) + options + bytes(size)
        off = 54 + len(options)
        pkt = Packet((), 6, b"", b"", 1, 2, flags, seq, ack, off, off + size, window=win,
                     l4=34)
        sack = ack
        if options and receiver.flags & SACK_PERM:
            sack = highest_sack(frame, 54, off, ack)
            sacked += sack != ack
        fast = [Seen(*s.fields()) for s in state]
        slow = [Seen(*s.fields()) for s in state]
        got = check(fast, direction, pkt, frame, "ESTABLISHED", False)
        want = in_window(slow, direction, seq, ack, (seq + size + (flags & 1)) & 0xFFFFFFFF,
                         win, flags, sack, False, None, False)
        assert (got, [s.fields() for s in fast]) == (want, [s.fields() for s in slow])
        verdicts.add(got)
    assert verdicts == {0, 1, 2}  # accepted, ignored and invalid segments all came up
    assert sacked > 1000  # and SACK blocks that moved the acknowledgement


def test_without_window_check_a_connection_is_not_tracked():
    fw = GatewayEngine("fw1", RULES, tcp_window_check=False)
    conn = Conn(fw)
    assert conn.entry().window is None
    assert conn.data(seq=conn.c + 3 * 128000)  # what a checking node drops
    fw.tcp_window_check = True  # at run time: for connections opened from now on
    fw.table.remove(conn.entry())
    assert Conn(fw, c0=9000).entry().window is not None


def test_a_spec_refuses_what_kernel_nodes_cannot_do_in_one_line():
    from experiments.schema import Cluster
    from nodes.settings import SettingsError, parse
    with pytest.raises(SettingsError, match="Linux has no switch") as err:
        parse(Cluster, {"node": "kernel", "tcp_window_check": False}, "cluster.")
    assert "\n" not in str(err.value)


def test_a_replicated_scale_above_14_is_taken_as_14():
    """RFC 7323's largest scale is 14 and Linux takes a larger one as 14; a record from a
    peer is clamped too, so a scaled window stays a 32-bit number on the fast path."""
    from nodes.conntrack import Entry
    from nodes.sync.replication import _apply_window
    entry = Entry.__new__(Entry)
    entry.window = None
    _apply_window(entry, {"window": (1, 2, 3, 255, 1, 4, 5, 6, 15, 1)})
    assert [s.scale for s in entry.window] == [14, 14]
    entry.window = None
    _apply_window(entry, {"scales": (200, 1, 3, 1)})
    assert [s.scale for s in entry.window] == [14, 3]
