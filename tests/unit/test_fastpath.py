"""The fast path's decisions (nodes/fastpath.py) in the gateway engine and the sync.

The kernel is played by the tests: "the kernel forwarded N bytes" is the client's
sequence number moving on without the engine seeing a segment, and its counters
are the readings handed to ``account``.
"""
import json

from nodes.engine import ACCEPT, OUTSIDE, GatewayEngine
from nodes.fastpath import NONE, OFFLOADED, PENDING, changes, readings, ruleset
from nodes.packet import make_key, reverse
from nodes.rules import RuleSet
from tests.unit.cluster_sim import RULES, Net
from tests.unit.frames import CLIENT, SERVER, tcp, udp
from tests.unit.test_tcpwindow import Conn


def offloaded(net_or_fw, conn):
    """Switch fw1's fast path on, let one segment through, and hand the kernel its
    elements; the adds, the removes and the entry."""
    fw = conn.fw
    fw.fastpath = True
    assert conn.data() and conn.server_ack()
    entry = conn.entry()
    assert entry.fast == PENDING
    if isinstance(net_or_fw, Net):
        net_or_fw.run()
    adds, removes = fw.offload.take(fw.sync, conn.t)
    return adds, removes, entry


def test_an_established_connection_goes_to_the_kernel_once_its_backup_has_it():
    net = Net(2, window_sync="change")
    conn = Conn(net.fw[1], client_opts=[], server_opts=[], win=2000)
    net.run()
    net.fw[1].fastpath = True
    assert conn.data()
    entry = conn.entry()
    assert entry.fast == PENDING
    # not acknowledged yet: nothing for the kernel
    assert net.fw[1].offload.take(net.sync[1], conn.t) == ([], [])
    net.run()
    adds, removes = net.fw[1].offload.take(net.sync[1], net.t)
    assert sorted(adds) == sorted([entry.orig, reverse(entry.orig)]) and removes == []
    assert entry.fast == OFFLOADED and len(net.fw[1].offload) == 1
    # the backup's copy has the window as unknown: it learns it from the next segment
    copy = next(iter(net.fw[2].table.entries()))
    assert [s.maxwin for s in copy.window] == [0, 0]
    assert net.fw[1].stats(net.t)["fastpath"]["offloaded"] == 1


def test_the_kernels_counters_go_into_the_entry_and_keep_it_alive():
    fw = GatewayEngine("fw1", RULES)
    conn = Conn(fw)
    adds, _, entry = offloaded(fw, conn)
    before = (entry.packets_orig, entry.bytes_orig, entry.packets_reply, entry.bytes_reply)
    orig, reply = entry.orig, reverse(entry.orig)
    fw.offload.account({orig: (10, 15000), reply: (5, 260)}, fw.table, 100.0, fw.idle_timeout)
    # L3 bytes from the kernel; the entry counts frames, 14 bytes of Ethernet more each
    assert entry.packets_orig == before[0] + 10 and entry.bytes_orig == before[1] + 15000 + 140
    assert entry.packets_reply == before[2] + 5 and entry.bytes_reply == before[3] + 260 + 70
    assert entry.expires == 100.0 + fw.idle_timeout(entry)
    # the next reading: only what is new
    fw.offload.account({orig: (12, 18000), reply: (5, 260)}, fw.table, 101.0, fw.idle_timeout)
    assert entry.packets_orig == before[0] + 12 and entry.bytes_orig == before[1] + 18000 + 168
    assert entry.packets_reply == before[2] + 5
    assert fw.offload.counters["fastpath_packets"] == 17


def test_a_fin_comes_back_to_the_engine_which_learns_the_window_again():
    """The kernel forwarded 50 kB the engine never saw: without the fixup (the window
    forgotten at offload, as Linux's flow_offload_fixup_tcp) the FIN would be out of
    the window, the connection would never close."""
    fw = GatewayEngine("fw1", RULES)
    conn = Conn(fw, client_opts=[], server_opts=[], win=2000)
    _, _, entry = offloaded(fw, conn)
    conn.c += 50_000  # forwarded by the kernel
    assert conn.data(flags="FA", n=0)
    assert entry.fast == NONE and fw.drops == {}
    _, removes = fw.offload.take(fw.sync, conn.t)
    assert sorted(removes) == sorted([entry.orig, reverse(entry.orig)])
    assert fw.offload.counters["fastpath_withdrawn_flags"] == 1


def test_without_the_fixup_the_same_fin_is_dropped():
    """The case above with the engine's stale window (the control: the test above
    fails if the offload does not forget the window)."""
    fw = GatewayEngine("fw1", RULES)
    conn = Conn(fw, client_opts=[], server_opts=[], win=2000)
    conn.c += 50_000
    assert not conn.data(flags="FA", n=0)
    assert fw.drops == {"tcp_out_of_window": 1}


def test_a_backup_takes_an_offloaded_connection_over_without_stalling():
    net = Net(2, window_sync="change")
    conn = Conn(net.fw[1], client_opts=[], server_opts=[], win=2000)
    net.run()
    offloaded(net, conn)
    for _ in range(30):  # 30 kB through fw1's kernel, acknowledged
        conn.c += 1000
    net.down.add(1)
    net.run(0.3)
    assert net.sync[2].counters["entries_adopted"] == 1
    conn.fw = net.fw[2]
    conn.t = net.t
    assert conn.server_ack() and conn.data() and conn.server_ack()
    assert net.fw[2].drops == {}


def test_a_connection_with_a_helper_stays_in_the_engine():
    fw = GatewayEngine("fw1", RULES)
    fw.fastpath = True
    assert fw.process(tcp(flags="S", dport=21, seq=100), OUTSIDE, 0.0) == ACCEPT
    assert fw.process(tcp(SERVER, CLIENT, 21, 40000, "SA", 500, 101), 1, 0.0) == ACCEPT
    assert fw.process(tcp(flags="A", dport=21, seq=101, ack=501), OUTSIDE, 0.0) == ACCEPT
    assert fw.process(tcp(SERVER, CLIENT, 21, 40000, "PA", 501, 101, payload=b"220 hi\r\n"),
                      1, 0.0) == ACCEPT
    entry = next(iter(fw.table.entries()))
    assert entry.state == "ESTABLISHED" and entry.helper == "ftp" and entry.fast == NONE
    assert not fw.offload.has_changes()


def test_udp_goes_to_the_kernel_after_its_reply_and_leaves_when_it_expires():
    fw = GatewayEngine("fw1", RuleSet.from_text("10.0.0.0/25 10.0.0.192/26 udp 53 accept"))
    fw.fastpath = True
    assert fw.process(udp(), OUTSIDE, 0.0) == ACCEPT
    entry = next(iter(fw.table.entries()))
    assert entry.fast == NONE  # no reply yet
    assert fw.process(udp(SERVER, CLIENT, 53, 5000), 1, 0.1) == ACCEPT
    assert fw.process(udp(), OUTSIDE, 0.2) == ACCEPT
    assert fw.offload.take(fw.sync, 0.2)[0]
    fw.expire(entry.expires + 1)
    assert entry.fast == NONE and len(fw.offload) == 0
    assert fw.offload.counters["fastpath_withdrawn_expired"] == 1


def test_switching_off_and_a_moved_entry_withdraw():
    fw = GatewayEngine("fw1", RULES)
    conn = Conn(fw)
    _, _, entry = offloaded(fw, conn)
    fw.table.set_owner(entry, "fw2")  # the sync gave it to another node
    fw.offload.account({entry.orig: (1, 60), reverse(entry.orig): (0, 0)}, fw.table, 5.0,
                       fw.idle_timeout)
    assert entry.fast == NONE and entry.packets_orig >= 1  # counted, then withdrawn
    assert fw.offload.counters["fastpath_withdrawn_moved"] == 1
    fw.table.set_owner(entry, "fw1")
    assert conn.data()  # fast path still on: offloaded again
    assert fw.offload.take(fw.sync, conn.t)[0]
    fw.fastpath = False
    assert entry.fast == NONE and fw.offload.counters["fastpath_withdrawn_switched_off"] == 1
    assert len(fw.offload.take(fw.sync, conn.t)[1]) == 2


def test_a_refused_element_sends_its_connection_back_to_the_engine():
    fw = GatewayEngine("fw1", RULES)
    conn = Conn(fw)
    adds, _, entry = offloaded(fw, conn)
    fw.offload.refused(adds)
    assert entry.fast == NONE and len(fw.offload) == 0


def test_the_nft_text_and_the_readings():
    text = "\n".join(ruleset("fw1-eth0", "fw1-eth1", 1024))
    assert "flags owner" in text  # the kernel removes it when the node's nft session ends
    assert 'device "fw1-eth0"' in text and 'fwd to "fw1-eth1"' in text
    assert "tcp flags & (fin|syn|rst) == 0" in text and "ip frag-off & 0x3fff == 0" in text
    key4 = make_key(6, bytes([10, 0, 0, 1]), 40000, bytes([10, 0, 0, 201]), 80)
    key6 = make_key(17, bytes(15) + b"\1", 5000, bytes(15) + b"\2", 53)
    out = changes([key4, key6], [reverse(key4)])
    assert out.splitlines() == [
        "delete element netdev fwcluster_fast fast4 { 10.0.0.201 . 10.0.0.1 . 6 . 80 . 40000 }",
        "add element netdev fwcluster_fast fast4 { 10.0.0.1 . 10.0.0.201 . 6 . 40000 . 80 }",
        "add element netdev fwcluster_fast fast6 { ::1 . ::2 . 17 . 5000 . 53 }"]
    # what nft 1.0.6 printed here for a set with counters
    listing = {"nftables": [{"metainfo": {}}, {"set": {
        "family": "netdev", "name": "fast4", "table": "fwcluster_fast",
        "elem": [{"elem": {"val": {"concat": ["10.0.0.1", "10.0.0.201", "tcp", 40000, 80]},
                           "counter": {"packets": 3, "bytes": 180}}}]}}]}
    assert readings(json.dumps(listing)) == {key4: (3, 180)}


def test_an_ack_of_data_the_heir_never_saw_passes_after_an_offloaded_connection_fails_over():
    """What a crash leaves (seen in CI: five segments dropped): fw1's kernel carried the
    client's data to the server, whose last acknowledgements died with fw1. The client
    retransmits the oldest through the heir, which learns the client's end from it; the
    server's next ACK covers more than that. Linux marks an offloaded connection's two
    directions liberal (nft_flow_offload's flow_offload_ct_tcp: conntrack does not see
    every packet), and so must the engine and the copy it replicates."""
    net = Net(2, window_sync="change")
    conn = Conn(net.fw[1], client_opts=[], server_opts=[], win=2000)
    net.run()
    offloaded(net, conn)
    for _ in range(30):  # 30 kB through fw1's kernel, received by the server
        conn.c += 1000
    net.run()
    net.down.add(1)
    net.run(0.3)
    conn.fw, conn.t = net.fw[2], net.t
    assert conn.data(seq=conn.c - 5000)  # the client's retransmission, first through fw2
    assert conn.server_ack()  # acknowledges all 30 kB: more than fw2 has seen
    assert conn.data() and conn.server_ack()
    assert net.fw[2].drops == {}


def test_an_answer_cut_short_by_nft_is_a_failed_reading_not_a_dead_node():
    """On Ubuntu 24.04 (nft 1.0.9) a node's nft session once answered a listing of its
    table with 190 characters of JSON and a line's end; the node parsed them, raised,
    and died with its connections (test_fastpath.py, 4 of 9 runs of the file). An
    answer that is not a whole listing is a failed reading: counted, None, and the
    session is ended (its answers can no longer be told apart; the kernel drops its
    table with it), so the node finds it gone and its engine carries every connection.
    Here stand-ins for nft read the listing's line and write half an answer, then end
    (an answer cut short) or stay (a line that is not the listing)."""
    import os
    import subprocess
    import sys

    from nodes.shell.fastpath import KernelFastPath
    from topo.procs import wait_until
    half = '{"nftables": [{"metainfo": {"version": "1.0.9"}}, {"table": {"family": "netdev"'
    for then in ("", "\\n'); sys.stdout.flush(); import time; time.sleep(30); print('"):
        kernel = KernelFastPath.__new__(KernelFastPath)
        kernel.errors, kernel.installed = 0, set()
        kernel.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.readline(); "
             f"sys.stdout.write({half!r} + '{then}'); sys.stdout.flush()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.set_blocking(kernel.proc.stderr.fileno(), False)  # as KernelFastPath makes it
        try:
            assert kernel.read() is None
            assert kernel.errors == 1
            wait_until(lambda: not kernel.alive(), 10, "the session to end")
        finally:
            kernel.proc.kill()
            kernel.proc.wait()
