"""FTP protocol-specific code: the four announcements, split lines, expectations."""
import pytest

from nodes.conntrack import Timeouts
from nodes.engine import ACCEPT, DROP, HOLD, INSIDE, OUTSIDE, GatewayEngine
from nodes.ftp import FtpSyntaxError, parse_227, parse_229, parse_eprt, parse_port
from nodes.packet import ip_bytes, make_key
from nodes.rules import RuleSet
from tests.unit.frames import CLIENT, SERVER, tcp

RULES = RuleSet.from_text("10.0.0.0/25 10.0.0.201 tcp 21 accept helper=ftp")


def test_parse_port_and_eprt():
    assert parse_port(b"10,0,0,1,4,1") == (ip_bytes("10.0.0.1"), 1025)
    assert parse_port(b" 10,0,0,1,255,255 ") == (ip_bytes("10.0.0.1"), 65535)
    assert parse_eprt(b"|1|10.0.0.1|6275|") == (ip_bytes("10.0.0.1"), 6275)
    assert parse_eprt(b"!1!10.0.0.1!6275!") == (ip_bytes("10.0.0.1"), 6275)


def test_parse_passive_replies():
    assert parse_227(b"227 Entering Passive Mode (10,0,0,201,195,80).") == (ip_bytes(SERVER), 50000)
    assert parse_227(b"227 =10,0,0,201,0,21") == (ip_bytes(SERVER), 21)
    assert parse_229(b"229 Entering Extended Passive Mode (|||50001|)") == 50001


@pytest.mark.parametrize("fn, arg", [
    (parse_port, b"10,0,0,1,4"), (parse_port, b"10,0,0,256,4,1"), (parse_port, b"a,b,c,d,e,f"),
    (parse_port, b"10,0,0,1,0,0"), (parse_port, b""),
    (parse_eprt, b"|2|10.0.0.1|5000|"), (parse_eprt, b"|1|::1|5000|"), (parse_eprt, b"|1|10.0.0.1|0|"), (parse_eprt, b"|1|10.0.0|80|"),
    (parse_eprt, b"|1|10.0.0.1|99999|"), (parse_eprt, b"1|10.0.0.1|80"),
    (parse_227, b"227 Entering Passive Mode"), (parse_229, b"229 (|||0|)"), (parse_229, b"229 ok"),
])
def test_malformed_announcements_raise(fn, arg):
    with pytest.raises(FtpSyntaxError):
        fn(arg)


class Session:
    """A control connection through one engine, with sequence numbers kept."""

    def __init__(self, fw, t=0.0):
        self.fw, self.t, self.c, self.s = fw, t, 1001, 5001
        assert fw.process(tcp(flags="S", seq=1000), OUTSIDE, t) == ACCEPT
        assert fw.process(tcp(SERVER, CLIENT, 21, 40000, "SA", 5000, 1001), INSIDE, t) == ACCEPT
        assert fw.process(tcp(flags="A", seq=1001, ack=5001), OUTSIDE, t) == ACCEPT

    def client(self, data: bytes, seq=None):
        verdict = self.fw.process(tcp(flags="PA", seq=self.c if seq is None else seq, ack=self.s,
                                      payload=data), OUTSIDE, self.t)
        if verdict != DROP and seq is None:
            self.c += len(data)
        return verdict

    def server_ack(self):
        """The server acknowledges what the client sent (its window opens again)."""
        return self.fw.process(tcp(SERVER, CLIENT, 21, 40000, "A", self.s, self.c), INSIDE, self.t)

    def server(self, data: bytes):
        verdict = self.fw.process(tcp(SERVER, CLIENT, 21, 40000, "PA", self.s, self.c, data),
                                  INSIDE, self.t)
        if verdict != DROP:
            self.s += len(data)
        return verdict


def data_syn(fw, src, dst, sport, dport, t=0.0):
    return fw.process(tcp(src, dst, sport, dport, "S", 7), INSIDE if src == SERVER else OUTSIDE, t)


@pytest.fixture
def fw():
    return GatewayEngine("fw1", RULES)


@pytest.mark.parametrize("line", [b"PORT 10,0,0,1,195,80\r\n", b"EPRT |1|10.0.0.1|50000|\r\n",
                                  b"port 10,0,0,1,195,80\r\n"])
def test_active_mode_admits_exactly_the_announced_connection_once(fw, line):
    ftp = Session(fw)
    assert data_syn(fw, SERVER, CLIENT, 20, 50000) == DROP  # not yet announced
    assert ftp.client(line) == ACCEPT
    assert fw.table.n_expectations == 1
    assert data_syn(fw, SERVER, CLIENT, 20, 50001) == DROP  # another port
    assert data_syn(fw, "10.0.0.202", CLIENT, 20, 50000) == DROP  # another server
    assert data_syn(fw, SERVER, CLIENT, 33333, 50000) == ACCEPT  # any source port
    entry, _ = fw.table.lookup(make_key(6, ip_bytes(SERVER), 33333, ip_bytes(CLIENT), 50000))
    assert entry.related_to == fw.table.lookup(make_key(6, ip_bytes(CLIENT), 40000, ip_bytes(SERVER), 21))[0].orig
    assert data_syn(fw, SERVER, CLIENT, 33334, 50000) == DROP  # once
    assert fw.table.n_expectations == 0
    assert fw.counters["sync_requests"] == 1


@pytest.mark.parametrize("reply", [b"227 Entering Passive Mode (10,0,0,201,195,80).\r\n",
                                   b"229 Entering Extended Passive Mode (|||50000|)\r\n"])
def test_passive_mode_admits_the_client_to_the_announced_port(fw, reply):
    ftp = Session(fw)
    assert ftp.client(b"PASV\r\n") == ACCEPT
    assert ftp.server(reply) == ACCEPT
    assert data_syn(fw, "10.0.0.2", SERVER, 41000, 50000) == DROP  # another client
    assert data_syn(fw, CLIENT, SERVER, 41000, 50000) == ACCEPT
    assert data_syn(fw, CLIENT, SERVER, 41001, 50000) == DROP


def test_command_split_across_segments(fw):
    ftp = Session(fw)
    for part in (b"PO", b"RT 10,0,0,1,", b"195,80", b"\r", b"\n"):
        assert fw.table.n_expectations == 0
        assert ftp.client(part) == ACCEPT
    assert fw.table.n_expectations == 1


def test_retransmitted_segment_is_not_read_twice(fw):
    ftp = Session(fw)
    start = ftp.c
    ftp.client(b"PORT 10,0,0,1,195,80\r\n")
    ftp.client(b"PORT 10,0,0,1,195,80\r\n", seq=start)  # a retransmission
    assert fw.table.n_expectations == 1
    ftp.client(b"NOOP\r\n")
    # an overlapping retransmission with new data after: only the new part is read
    ftp.client(b"NOOP\r\nPORT 10,0,0,1,195,81\r\n", seq=ftp.c - 6)
    # read once: the new announcement replaces the first (one pending per master)
    (exp,) = [x for xs in fw.table.expectations.values() for x in xs]
    assert exp.dport == 195 * 256 + 81 and fw.counters["expectations_evicted"] == 1


def test_one_control_connection_cannot_pile_up_expectations(fw):
    """Issue 14: one control connection created 20,000 expectations. As Linux's FTP
    helper (max_expected 1), a new announcement evicts the pending one."""
    ftp = Session(fw)
    for i in range(2000):
        assert ftp.client(f"PORT 10,0,0,1,{100 + i // 256},{i % 256}\r\n".encode()) == ACCEPT
        ftp.server_ack()
    assert fw.table.n_expectations == 1 and fw.counters["expectations_evicted"] == 1999


def test_gap_discards_partial_line(fw):
    ftp = Session(fw)
    ftp.client(b"PORT 10,0,0,1,")
    ftp.c += 100  # a lost segment
    assert ftp.client(b"195,80\r\n") == ACCEPT
    assert fw.table.n_expectations == 0 and fw.counters["ftp_gap"] == 1


@pytest.mark.parametrize("line, reason", [
    (b"PORT 10,0,0,1,999,1\r\n", "ftp_malformed"),
    (b"PORT garbage\r\n", "ftp_malformed"),
    (b"EPRT |1|10.0.0.1|0|\r\n", "ftp_malformed"),
    (b"PORT 10,0,0,99,195,80\r\n", "ftp_address_mismatch"),  # a bounce attempt
])
def test_bad_commands_are_dropped_and_judged_again_on_retransmission(fw, line, reason):
    ftp = Session(fw)
    assert ftp.client(line) == DROP
    assert fw.drops[reason] == 1
    assert ftp.client(line) == DROP  # the retransmission is not let through
    assert fw.table.n_expectations == 0


def test_garbage_that_is_no_announcement_passes(fw):
    ftp = Session(fw)
    assert ftp.client(b"\xff\xfe\x00 HELLO\r\nUSER x\r\n") == ACCEPT
    assert ftp.server(b"500 what\r\n") == ACCEPT


def test_expectation_times_out_and_goes_with_its_master():
    fw = GatewayEngine("fw1", RULES, Timeouts(expectation=5, close=1))
    ftp = Session(fw)
    ftp.client(b"PORT 10,0,0,1,195,80\r\n")
    ftp.client(b"PORT 10,0,0,1,195,81\r\n")
    assert data_syn(fw, SERVER, CLIENT, 20, 50000, t=6) == DROP
    fw.expire(6)
    assert fw.table.n_expectations == 0
    ftp.t = 6
    ftp.client(b"PORT 10,0,0,1,195,82\r\n")
    assert fw.table.n_expectations == 1
    fw.process(tcp(flags="R", seq=ftp.c), OUTSIDE, 6)
    fw.expire(7.5)  # the closed master goes, and takes its expectation along
    assert fw.table.n_expectations == 0 and len(fw.table) == 0


class SlowSync:
    """A fake sync whose requests complete when told to."""

    wants_windows = False

    def __init__(self):
        self.finished, self.changes = set(), []

    def state_changed(self, kind, obj, now):
        self.changes.append(kind)

    def request_sync(self, reason, objs, now):
        return reason

    def done(self, ticket, now):
        return ticket in self.finished


def test_announcing_packet_and_later_ones_are_held_until_sync_is_done():
    sync = SlowSync()
    fw = GatewayEngine("fw1", RULES, sync=sync, hold_timeout=0.05)
    ftp = Session(fw)
    assert sync.changes == ["new", "update", "update"]  # SYN_RECV, then ESTABLISHED
    assert ftp.client(b"PORT 10,0,0,1,195,80\r\n") == HOLD
    assert ftp.client(b"LIST\r\n") == HOLD
    assert sync.changes == ["new", "update", "update", "expect"]
    assert fw.release(0.01) == []
    sync.finished.add("ftp_data_announced")
    released = fw.release(0.02)
    assert [f[-6:] for f, _ in released] == [b"195,80\r\n"[-6:], b"LIST\r\n"]
    assert fw.counters["holds_completed"] == 1
    assert fw.stats(0.02)["hold_ms"] == {"p50": 20.0, "p99": 20.0, "n": 1}
    assert ftp.client(b"NOOP\r\n") == ACCEPT


def test_hold_times_out():
    fw = GatewayEngine("fw1", RULES, sync=SlowSync(), hold_timeout=0.05)
    ftp = Session(fw)
    assert ftp.client(b"PORT 10,0,0,1,195,80\r\n") == HOLD
    assert fw.release(0.04) == []
    assert len(fw.release(0.05)) == 1
    assert fw.counters["holds_timed_out"] == 1
