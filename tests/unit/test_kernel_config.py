"""Kernel nodes' pure parts: the rule file as nftables, conntrackd's config and
outputs, the controller's commit messages."""
import json
import struct

import pytest

from controller.commit import Commits, check_order
from nodes import syncproto as sp
from nodes.kernel import conntrackd as ctd
from nodes.kernel import nflog, nft
from nodes.rules import RuleSet
from nodes.settings import SettingsError

RULES = RuleSet.from_text("10.0.0.0/25 10.0.0.192/26 tcp 21 accept helper=ftp\n"
                          "any 10.0.0.201 udp 53 accept\n"
                          "10.0.0.0/24 any any 1024-65535 drop\n"
                          "any any icmp any accept\n")


def test_the_rule_file_becomes_the_same_decisions_in_nftables():
    text = nft.ruleset(RULES)
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    assert ("ip saddr 10.0.0.0/25 ip daddr 10.0.0.192/26 meta l4proto tcp tcp dport 21 "
            'ct helper set "ftp-standard" counter name "rule_1" accept') in lines
    assert 'ip daddr 10.0.0.201/32 meta l4proto udp udp dport 53 counter name "rule_2" accept' \
        in lines
    # any protocol with ports: the ports bind TCP and UDP only, as RuleSet.match does
    assert ('ip saddr 10.0.0.0/24 meta l4proto { tcp, udp } th dport 1024-65535 '
            'goto drop_policy') in lines
    assert 'ip saddr 10.0.0.0/24 meta l4proto != { tcp, udp } goto drop_policy' in lines
    forward = lines.index("chain forward {")
    order = [lines.index(x, forward) for x in ("ct state established,related accept",
                                               "ct state invalid goto drop_invalid",
                                               "goto drop_policy")]
    assert order == sorted(order)  # state first, the rules, then the final deny
    assert lines.index("goto drop_policy", forward) > lines.index(
        'meta l4proto icmp counter name "rule_4" accept')
    # every drop is logged (bounded, in the kernel), counted by reason, dropped
    for reason in nft.DROPS:
        chain = lines.index(f"chain drop_{reason} {{")
        assert lines[chain + 1] == (f"limit rate {nflog.LOG_RATE}/second burst {nflog.LOG_RATE} "
                                    f'packets log group {nflog.GROUP} prefix "{reason}"')
        assert lines[chain + 2] == f'counter name "drop_{reason}" drop'
    assert "policy drop;" in text and "ether type { ip, ip6, arp } accept" in text


def test_ipv6_rules_become_ip6_matches_and_the_link_icmpv6_passes_before_invalid():
    rules = RuleSet.from_text("fd00::/64 fd00::c8/125 tcp 21 accept helper=ftp\n"
                              "any any icmpv6 any accept\n"
                              "0.0.0.0/0 any udp 53 accept\n")
    lines = [line.split("#")[0].strip() for line in nft.ruleset(rules).splitlines()]
    assert ("ip6 saddr fd00::/64 ip6 daddr fd00::c8/125 meta l4proto tcp tcp dport 21 "
            'ct helper set "ftp-standard" counter name "rule_1" accept') in lines
    assert 'meta l4proto icmpv6 counter name "rule_2" accept' in lines
    # a prefix of length 0 still names its family, as the Python rule does
    assert 'meta nfproto ipv4 meta l4proto udp udp dport 53 counter name "rule_3" accept' in lines
    link = lines.index("icmpv6 type { 130, 131, 132, 133, 134, 135, 136, 137, 143 } accept")
    assert lines.index("ct state established,related accept") < link < lines.index(
        "ct state invalid goto drop_invalid")
    assert 'ct helper ftp-standard { type "ftp" protocol tcp; l3proto inet; }' in lines


def test_nft_counters_are_read_by_reason():
    listing = json.dumps({"nftables": [
        {"metainfo": {}},
        {"counter": {"family": "inet", "table": "fwcluster", "name": "drop_policy",
                     "packets": 7, "bytes": 420}},
        {"counter": {"family": "inet", "table": "fwcluster", "name": "rule_1",
                     "packets": 3, "bytes": 180}},
        {"counter": {"family": "bridge", "table": "fwcluster_l2", "name": "drop_ethertype",
                     "packets": 2, "bytes": 140}},
        {"counter": {"family": "inet", "table": "other", "name": "drop_policy", "packets": 99}}]})
    counts = nft.read_counters(listing)
    assert nft.drops(counts) == {"policy": 7, "ethertype": 2}
    assert counts["rule_1"]["packets"] == 3


def test_sync_modes_map_to_conntrackd_modes_and_the_rest_is_refused():
    assert ctd.conntrackd_mode({"mode": "none"}, 3) is None
    assert ctd.conntrackd_mode({"mode": "ondemand"}, 2) == "ftfw"
    assert ctd.conntrackd_mode({"mode": "ondemand"}, 3) == "notrack"  # FT-FW lost updates
    assert ctd.conntrackd_mode({"mode": "ondemand"}, 3, "ftfw") == "ftfw"
    assert ctd.conntrackd_mode({"mode": "periodic", "interval": 2}, 3) == "alarm"
    assert ctd.conntrackd_mode({"mode": "combined"}, 3) == "alarm"
    for sync, what in (({"mode": "home"}, "no conntrackd counterpart"),
                       ({"mode": "ondemand", "hold": True}, "sync hold"),
                       ({"mode": "ondemand", "k": 1}, "sync k"),
                       ({"mode": "ondemand", "replication": "backup"}, "every entry to every node"),
                       ({"mode": "periodic", "interval": 0.5}, "whole seconds"),
                       ({"mode": "periodic", "periodic": "differential"}, "re-sends every entry"),
                       ({"mode": "ondemand", "window_sync": "change"}, "never sends a TCP window"),
                       ({"mode": "ondemand", "window_sync": "schedule"}, "only its scales")):
        with pytest.raises(SettingsError, match=what) as err:
            ctd.conntrackd_mode(sync, 3)
        assert "\n" not in str(err.value)
    with pytest.raises(SettingsError, match="use one of ftfw, alarm, notrack"):
        ctd.conntrackd_mode({"mode": "ondemand"}, 3, "ftfp")
    with pytest.raises(SettingsError, match="external cache"):
        ctd.check_cache("alarm", False)


def test_conntrackd_config_is_one_daemon_per_namespace_on_the_sync_link():
    conf = ctd.config("ftfw", "fw2", "10.0.1.2", "fw2-eth2", "/run/x/fw2.lock",
                      "/run/x/fw2.sock", "/tmp/fw2.log", external_cache=False)
    for line in ("Mode FTFW {", "DisableExternalCache on", "IPv4_interface 10.0.1.2",
                 "Interface fw2-eth2", f"Group {ctd.GROUP_PORT}", "LockFile /run/x/fw2.lock",
                 "Path /run/x/fw2.sock", "Systemd off", "ExpectationSync {",
                 "IPv4_address 10.0.1.0/24"):
        assert line in conf, line
    alarm = ctd.config("alarm", "fw1", "10.0.1.1", "fw1-eth2", "l", "s", "g", interval=3)
    assert "RefreshTime 3" in alarm and "DisableExternalCache" not in alarm


def test_window_sync_is_conntrackds_tcp_window_tracking():
    lines = lambda conf: [line.strip() for line in conf.splitlines()]  # noqa: E731
    scale = ctd.config("ftfw", "fw1", "10.0.1.1", "fw1-eth2", "l", "s", "g", window_sync="scale")
    off = ctd.config("ftfw", "fw1", "10.0.1.1", "fw1-eth2", "l", "s", "g")  # the default
    assert "TCPWindowTracking On" in lines(scale) and "TCPWindowTracking Off" in lines(off)
    assert ctd.conntrackd_mode({"mode": "ondemand", "window_sync": "off"}, 2) == "ftfw"


def test_loose_lets_a_bare_ack_open_a_connection_in_nftables():
    strict = [line.split("#")[0].strip() for line in nft.ruleset(RULES).splitlines()]
    loose = [line.split("#")[0].strip() for line in nft.ruleset(RULES, loose=True).splitlines()]
    rule = "meta l4proto tcp tcp flags & (fin | syn | rst | ack) != {} goto drop_tcp_no_entry"
    assert rule.format("syn") in strict and rule.format("{ syn, ack }") in loose


def test_conntrack_listing_becomes_entries_shaped_like_the_python_dump():
    listing = (
        "tcp      6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.201 sport=40000 dport=21 "
        "packets=5 bytes=300 src=10.0.0.201 dst=10.0.0.1 sport=21 dport=40000 packets=4 "
        "bytes=400 [ASSURED] mark=0 helper=ftp use=1\n"
        "udp      17 29 src=10.0.1.1 dst=225.0.0.50 sport=5 dport=3781 packets=1 bytes=9 "
        "[UNREPLIED] src=225.0.0.50 dst=10.0.1.1 sport=3781 dport=5 packets=0 bytes=0 mark=0\n"
        "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.\n")
    tcp, udp = ctd.parse_conntrack(listing, "fw1")
    assert tcp == {"proto": 6, "state": "ESTABLISHED", "timeout": 431999,
                   "orig": "tcp src=10.0.0.1 dst=10.0.0.201 sport=40000 dport=21",
                   "reply": "tcp src=10.0.0.201 dst=10.0.0.1 sport=21 dport=40000",
                   "tuple": {"proto": 6, "src": "10.0.0.1", "sport": 40000, "dst": "10.0.0.201",
                             "dport": 21},
                   "packets": [5, 4], "bytes": [300, 400], "l3_bytes": [300, 400],
                   "assured": True, "helper": "ftp",
                   "related_to": None, "owner": "fw1"}
    assert udp["state"] == "UNREPLIED" and not udp["assured"]
    from nodes.observe.inspect import format_entry
    assert "packets=5 bytes=300" in format_entry(tcp) and "owner=fw1" in format_entry(tcp)


def test_conntrack_expectations_become_expectations():
    listing = ("299 proto=6 src=10.0.0.201 dst=10.0.0.1 sport=0 dport=33367 "
               "mask-src=255.255.255.255 mask-dst=255.255.255.255 sport=0 dport=65535 "
               "master-src=10.0.0.1 master-dst=10.0.0.201 sport=57640 dport=21 class=0 "
               "helper=ftp\nconntrack v1.4.7 (conntrack-tools): 1 expectations have been shown.\n")
    (x,) = ctd.parse_expectations(listing, "fw2")
    assert x == {"timeout": 299, "proto": 6, "src": "10.0.0.201", "dst": "10.0.0.1",
                 "dport": 33367, "helper": "ftp",
                 "master": "tcp src=10.0.0.1 dst=10.0.0.201 sport=57640 dport=21",
                 "owner": "fw2"}


def test_conntrackd_stats_are_read_by_section():
    text = ("cache internal:\ncurrent active connections:\t           4\n"
            "connections created:\t\t           9\tfailed:\t           0\n\n"
            "external inject:\nconnections created:\t\t           2\tfailed:\t           1\n")
    text += ("multicast traffic (active device=fw1-eth2):\n"
             "                 904 Bytes sent                   1088 Bytes recv\n"
             "                  12 Pckts sent                     14 Pckts recv\n"
             "                   0 Error send                      0 Error recv\n\n")
    stats = ctd.parse_stats(text)
    assert stats["cache internal"]["current_active_connections"] == 4
    assert ctd.sync_counters(stats) == {"messages_sent": 12, "bytes_sent": 904,
                                        "messages_received": 14, "bytes_received": 1088}
    assert stats["external inject"] == {"connections_created": 2, "failed": 1}
    assert ctd.internal_entries(stats) == 4 and ctd.external_entries(stats) == 0


def test_frames_received_per_port_are_read_from_proc_net_dev():
    text = ("Inter-|   Receive                            |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
            "    lo:       0       0    0    0    0     0          0         0  0 0\n"
            "fw1-eth0: 123456    789    0    0    0     0          0         0  9 9\n"
            "fw1-eth1:1234567   4321    0    0    0     0          0         0  9 9\n")
    assert ctd.interface_packets(text, ("fw1-eth0", "fw1-eth1", "fw1-eth9")) == {
        "fw1-eth0": 789, "fw1-eth1": 4321, "fw1-eth9": 0}


def test_a_commit_answer_counts_once_and_only_for_this_controller():
    key = b"k" * 32
    commits = Commits(key, boot=77)
    request = sp.decode(commits.request(2), key)
    assert (request.type, request.receiver, request.seq) == (sp.COMMIT, 2, 1)
    done = sp.encode(sp.Message(sp.COMMIT_DONE, 2, 0, 5, 1, to_boot=77, query=0), key)
    assert commits.answered(done) == (2, 0)
    assert commits.answered(done) is None  # a duplicate (or replay) is no answer
    commits.request(2)
    other = sp.encode(sp.Message(sp.COMMIT_DONE, 2, 0, 5, 2, to_boot=78, query=0), key)
    assert commits.answered(other) is None  # for another incarnation of the controller
    assert commits.answered(b"\0" * 60) is None
    with pytest.raises(ValueError, match="use one of before_steer, after_steer, never"):
        check_order("first")


def test_a_resync_is_done_when_the_external_cache_stops_growing():
    """conntrackd signals no end to a bulk resync: a rejoining node commits it once the
    external cache's count has held still, and waits no longer than RESYNC_MAX."""
    steady, poll = ctd.RESYNC_STEADY, ctd.RESYNC_POLL
    growing = [0, 40, 90, 120]
    assert not ctd.resync_settled(growing, len(growing) * poll)
    arrived = growing + [120] * (steady - 1)
    assert ctd.resync_settled(arrived, max(ctd.RESYNC_MIN, len(arrived) * poll))
    assert not ctd.resync_settled([0] * steady, ctd.RESYNC_MIN / 2)  # too soon to say nothing came
    assert ctd.resync_settled([0] * steady, ctd.RESYNC_MIN)
    assert ctd.resync_settled(list(range(100)), ctd.RESYNC_MAX)
    text = "cache external:\ncurrent active connections:\t          12\n"
    assert ctd.external_entries(ctd.parse_stats(text)) == 12
    assert ctd.external_entries({}) == 0


def test_nflog_messages_are_built_and_read():
    bind, mode = nflog.bind_messages(group=3, copy_range=96)
    length, msg_type, flags = struct.unpack_from("=IHH", bind)
    assert (length, msg_type, flags) == (len(bind), 0x0401, 5)  # ULOG config, request + ack
    assert bind[16:20] == bytes([0, 0, 0, 3])  # AF_UNSPEC, version 0, group 3 big-endian
    assert bind[20:25] == struct.pack("=HH", 5, 1) + bytes([1])  # NFULA_CFG_CMD: BIND
    assert mode[24:30] == struct.pack("!IBB", 96, 2, 0)  # NFULA_CFG_MODE: copy 96 bytes
    ip = bytes.fromhex("450000280001000040060000") + bytes([10, 0, 0, 1, 10, 0, 0, 201]) + \
        struct.pack("!HH", 40001, 21) + bytes(16)

    def attr(kind, data):
        raw = struct.pack("=HH", 4 + len(data), kind) + data
        return raw + bytes(-len(raw) % 4)
    body = bytes([2, 0, 0, 1]) + attr(10, b"policy\0") + attr(9 | 0x4000, ip)
    msg = struct.pack("=IHHII", 16 + len(body), 0x0400, 0, 0, 0) + body
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + bytes(16)
    assert nflog.packets(msg + msg) == [("policy", ip)] * 2
    assert nflog.errors(error + msg) == [-1]
    assert nflog.ip_tuple(ip) == {"proto": 6, "src": "10.0.0.1", "dst": "10.0.0.201",
                                  "sport": 40001, "dport": 21}
    from tests.unit.frames import icmp, udp
    assert nflog.ip_tuple(icmp()[14:])["sport"] == 7 and nflog.ip_tuple(b"\x60" + bytes(39)) is None
    assert nflog.ip_tuple(udp("fd00::1", "fd00::c9", 5000, 53)[14:]) == {
        "proto": 17, "src": "fd00::1", "dst": "fd00::c9", "sport": 5000, "dport": 53}
    assert nflog.ip_tuple(icmp("fd00::1", "fd00::c9", id=9)[14:])["sport"] == 9


def test_conntrack_events_are_read_with_who_made_them():
    own = ("[1796181728.205834]\t    [NEW] tcp      6 120 SYN_SENT src=10.0.0.1 dst=10.0.0.201 "
           "sport=20000 dport=21 [UNREPLIED] src=10.0.0.201 dst=10.0.0.1 sport=21 dport=20000 "
           "helper=ftp")
    t, kind, entry, injected = ctd.parse_event(own, "fw1")
    assert (t, kind, injected, entry["owner"]) == (1796181728.205834, "NEW", False, "fw1")
    assert entry["tuple"] == {"proto": 6, "src": "10.0.0.1", "sport": 20000, "dst": "10.0.0.201",
                              "dport": 21}
    copy = own + " mark=0 [USERSPACE] portid=10719 progname=conntrackd"
    assert ctd.parse_event(copy)[3] is True
    ping = ("[1.5]\t [DESTROY] icmp     1 src=10.0.0.1 dst=10.0.0.201 type=8 code=0 id=7 "
            "src=10.0.0.201 dst=10.0.0.1 type=0 code=0 id=7")
    assert ctd.parse_event(ping)[2]["tuple"]["sport"] == 7
    assert ctd.parse_event("conntrack v1.4.7 (conntrack-tools): 3 flow events") is None


def test_the_python_nodes_listing_parses_as_conntracks_does():
    """fw-inspect prints conntrack -L's format, so that what parses a kernel node's
    listing parses a Python node's: the same fields back, bytes at L3."""
    from nodes.engine import INSIDE, OUTSIDE, GatewayEngine
    from nodes.observe.inspect import format_entry, format_expectation
    from tests.unit.frames import CLIENT, SERVER, icmp, tcp
    fw = GatewayEngine("fw1", RuleSet.from_text("10.0.0.0/25 10.0.0.201 tcp 21 accept "
                                                "helper=ftp\nany any icmp any accept\n"))
    fw.process(tcp(flags="S"), OUTSIDE, 0)
    fw.process(tcp(SERVER, CLIENT, 21, 40000, "SA", 5000, 1001), INSIDE, 0)
    fw.process(tcp(flags="A", seq=1001, ack=5001), OUTSIDE, 0)
    fw.process(tcp(SERVER, CLIENT, 21, 40000, "PA", 5001, 1001,
                   b"227 Entering Passive Mode (10,0,0,201,156,65).\r\n"), INSIDE, 0)
    fw.process(icmp(), OUTSIDE, 0)
    dump = fw.dump(1.0)
    for entry in dump["entries"]:
        line = format_entry(entry)
        (back,) = ctd.parse_conntrack(line, "fw1")
        for field in ("proto", "state", "orig", "reply", "tuple", "packets", "l3_bytes",
                      "assured", "helper", "owner"):
            assert back[field] == entry[field], (field, line)
        assert entry["l3_bytes"][0] == entry["bytes"][0] - 14 * entry["packets"][0]
    ping = format_entry(next(e for e in dump["entries"] if e["proto"] == 1))
    assert ping.startswith("icmp     1 ") and "type=8 code=0 id=7 packets=1 bytes=28 " \
        "[UNREPLIED] src=10.0.0.201 dst=10.0.0.1 type=0 code=0 id=7" in ping
    control = format_entry(next(e for e in dump["entries"] if e["proto"] == 6))
    assert control.startswith("tcp      6 ") and " ESTABLISHED src=10.0.0.1 " in control
    assert "[ASSURED] mark=0 helper=ftp use=1 owner=fw1" in control
    (exp,) = dump["expectations"]
    (parsed,) = ctd.parse_expectations(format_expectation(exp), "fw1")
    for field in ("proto", "dst", "dport", "master", "helper", "owner"):
        assert parsed[field] == exp[field], field


def test_an_ipv6_listing_parses_as_conntracks_does():
    from nodes.engine import INSIDE, OUTSIDE, GatewayEngine
    from nodes.observe.inspect import format_entry, format_expectation
    from tests.unit.frames import CLIENT6, SERVER6, icmp, tcp
    fw = GatewayEngine("fw1", RuleSet.from_text("fd00::/64 fd00::c9 tcp 21 accept helper=ftp\n"
                                                "any any icmpv6 any accept\n"))
    fw.process(tcp(CLIENT6, SERVER6, flags="S"), OUTSIDE, 0)
    fw.process(tcp(SERVER6, CLIENT6, 21, 40000, "SA", 5000, 1001), INSIDE, 0)
    fw.process(tcp(CLIENT6, SERVER6, flags="A", seq=1001, ack=5001), OUTSIDE, 0)
    fw.process(tcp(SERVER6, CLIENT6, 21, 40000, "PA", 5001, 1001,
                   b"229 Entering Extended Passive Mode (|||50001|)\r\n"), INSIDE, 0)
    fw.process(icmp(CLIENT6, SERVER6), OUTSIDE, 0)
    dump = fw.dump(1.0)
    for entry in dump["entries"]:
        (back,) = ctd.parse_conntrack(format_entry(entry), "fw1")
        for field in ("proto", "state", "orig", "reply", "tuple", "packets", "l3_bytes", "owner"):
            assert back[field] == entry[field], field
    ping = format_entry(next(e for e in dump["entries"] if e["proto"] == 58))
    assert ping.startswith("icmpv6   58 ") and "src=fd00::1 dst=fd00::c9 type=128 code=0 id=7 " \
        "packets=1 bytes=48 [UNREPLIED] src=fd00::c9 dst=fd00::1 type=129 code=0 id=7" in ping
    (exp,) = dump["expectations"]
    line = format_expectation(exp)
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    assert f"src=fd00::1 dst=fd00::c9 sport=0 dport=50001 mask-src={full} mask-dst={full}" in line
    (parsed,) = ctd.parse_expectations(line, "fw1")
    for field in ("proto", "dst", "dport", "master", "helper", "owner"):
        assert parsed[field] == exp[field], field


def test_a_kernel_node_leaves_its_youngest_connections_out_of_the_settled_count(tmp_path):
    # experiment 5 judged copies still on their way on kernel nodes: Python nodes leave
    # out connections younger than SETTLED, kernel nodes counted them all
    from nodes.kernel.watch import KernelEvents
    events = KernelEvents(str(tmp_path / "fw1.events.jsonl"), "fw1")
    events.recent.extend([1.00, 1.02, 1.08, 1.09])
    assert events.admitted_since(1.05) == 2
    assert list(events.recent) == [1.08, 1.09]  # the older ones are forgotten
    assert events.admitted_since(2.0) == 0
    events.close()
