"""TCP window tracking with real traffic (issue 16): a segment outside the window is
dropped and counted; a download taken over mid-stream by a backup survives with the
window replicated on every change, and stalls with a stale one unless the backup is
liberal; a loose node picks a connection up mid-stream without any sync.
"""
import sys

import pytest

from tests.integration.test_failover import SIZE, crash_the_carrier, download
from topo import faults
from topo.addresses import client_ip, server_ip, server_mac
from topo.procs import wait_until

pytestmark = pytest.mark.mininet


def drops(cluster, reason, nodes=None):
    return sum(cluster.ask(n, "stats")["drops"].get(reason, 0)
               for n in nodes or cluster.node_names() if n in cluster.procs)


def test_a_segment_outside_the_window_is_dropped_and_the_connection_goes_on(cluster_factory,
                                                                           tmp_path):
    cluster = cluster_factory(n=1)
    client, out = download(cluster, tmp_path)
    entry = wait_until(lambda: next((e for e in cluster.ask("fw1", "dump")["entries"]
                                     if e["related_to"] and e["state"] == "ESTABLISHED"), None),
                       5, "the data connection")
    t = entry["tuple"]
    # the client's next segment of the data connection as it leaves c1, sent again 1 GB
    # further on (half the sequence space: always ahead, never behind)
    script = tmp_path / "inject.py"
    script.write_text(
        "from scapy.all import Ether, IP, TCP, sendp, sniff\n"
        f"flow = 'tcp and src port {t['sport']} and dst port {t['dport']}'\n"
        "seen = sniff(iface='c1-eth0', filter=flow, count=1, timeout=10)[0]\n"
        f"sendp(Ether(dst='{server_mac(1)}') / IP(src='{t['src']}', dst='{t['dst']}')"
        f" / TCP(sport={t['sport']}, dport={t['dport']}, flags='PA',"
        " seq=(seen[TCP].seq + (1 << 30)) % (1 << 32), ack=seen[TCP].ack) / (b'x' * 100),"
        " iface='c1-eth0', verbose=False)\n")
    before = drops(cluster, "tcp_out_of_window")
    said = cluster.net["c1"].cmd(f"{sys.executable} {script}")
    assert "Error" not in said, said
    wait_until(lambda: drops(cluster, "tcp_out_of_window") == before + 1, 5,
               "the out-of-window segment counted")
    wait_until(lambda: not client.alive(), 60, "the download to end")
    from experiments.analysis.attribution import read_jsonl
    (record,) = read_jsonl(str(out))
    assert record["outcome"] == "ok" and record["bytes"] == SIZE


@pytest.mark.parametrize("window_sync,liberal,survives", [
    # the backup's window is current: the owner lets a batch out only after its window
    # records (nodes/shell/node.py, pump). It stalled in about 1 run in 10 before that,
    # when the crash caught data the client had acknowledged and the heir never saw
    # (tests/unit/test_node_loop.py)
    ("change", False, True),
    ("schedule", False, False),  # on demand: the window as of the handshake, megabytes old
    ("schedule", True, True),  # the same stale window, not checked
])
def test_a_download_taken_over_mid_stream(cluster_factory, tmp_path, window_sync, liberal,
                                          survives):
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "window_sync": window_sync},
                              failover="backup", tcp_liberal=liberal)
    client, out = download(cluster, tmp_path)
    node, record = crash_the_carrier(cluster, client, out)
    stale_drops = drops(cluster, "tcp_out_of_window")
    if survives:
        assert record["outcome"] == "ok" and record["bytes"] == SIZE, record
        if not liberal:
            assert stale_drops == 0
    else:
        assert record["outcome"] != "ok", record
        assert stale_drops > 0  # the heir refused the connection's segments


def test_the_liberal_switch_is_set_at_run_time(cluster_factory, tmp_path):
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "window_sync": "schedule"},
                              failover="backup")
    client, out = download(cluster, tmp_path)
    settings = cluster.set_sync("tcp_liberal=on", cluster.node_names())
    assert settings["window_sync"] == "schedule"
    assert all(cluster.ask(n, "config")["firewall"]["tcp_liberal"] for n in cluster.node_names())
    node, record = crash_the_carrier(cluster, client, out)
    assert record["outcome"] == "ok", record


def test_a_loose_node_picks_a_connection_up_mid_stream_without_sync(cluster_factory, tmp_path):
    """No sync: the node that takes a crashed node's flows has no state for them. Loose,
    it picks the probe's connection up from its next segment (a bare ACK with data)."""
    cluster = cluster_factory(n=2, sync={"mode": "none"}, failover="backup", tcp_loose=True)
    server = cluster.spawn("probe-server", [sys.executable, "-m", "experiments.probe", "server",
                                            "--address", server_ip(1), "--port", "5001"],
                           host=cluster.net["srv1"])
    wait_until(lambda: "ready" in server.log_tail(), 10, "the probe server")
    client = cluster.spawn("probe-client", [sys.executable, "-m", "experiments.probe", "client",
                                            "--address", server_ip(1), "--port", "5001",
                                            "--interval", "0.005"], host=cluster.net["c1"])
    wait_until(lambda: "connected" in client.log_tail(), 10, "the probe to connect")
    carrier = wait_until(lambda: next((n for n in cluster.node_names() for e in
                                       cluster.ask(n, "dump")["entries"]
                                       if e["tuple"]["dport"] == 5001), None), 5,
                         "the probe's node")
    faults.crash(cluster, carrier)
    heir = next(n for n in cluster.node_names() if n != carrier)
    picked = wait_until(lambda: (lambda s: s if s["counters"].get("tcp_picked_up") else None)(
        cluster.ask(heir, "stats")), 10, "the heir to pick the connection up")
    assert picked["drops"].get("tcp_no_entry", 0) == 0
    (entry,) = [e for e in cluster.ask(heir, "dump")["entries"] if e["tuple"]["dport"] == 5001]
    assert entry["state"] == "ESTABLISHED" and entry["tuple"]["src"] == client_ip(1)
    wait_until(lambda: cluster.ask(heir, "dump")["entries"][0]["packets"][1] > 10, 10,
               "the server's echoes through the heir")
    assert client.alive()


SNIFF_INJECTED = """
from scapy.all import TCP, sniff
# only a 140-byte IPv4 packet (20 + 20 + the 100 bytes): a sniffer that decoded each of
# the download's segments in Python fell behind it, and lost the one it waited for
got = sniff(iface='srv1-eth0', filter='tcp and ip[2:2] = 140', timeout=12,
            stop_filter=lambda p: TCP in p
            and bytes(p[TCP].payload) == b'x' * 100,
            started_callback=lambda: print('listening', flush=True))
print('arrived' if got and bytes(got[-1][TCP].payload) == b'x' * 100 else 'not arrived',
      flush=True)
"""

INJECT_AHEAD = """
from scapy.all import Ether, IP, TCP, sendp, sniff
flow = 'tcp and dst host {server} and not port 21'  # the data connection, as it leaves c1
seen = sniff(iface='c1-eth0', filter=flow, count=1, timeout=10)[0]
sendp(Ether(dst='{mac}') / IP(src=seen[IP].src, dst=seen[IP].dst)
      / TCP(sport=seen[TCP].sport, dport=seen[TCP].dport, flags='PA',
            seq=(seen[TCP].seq + (1 << 30)) % (1 << 32), ack=seen[TCP].ack) / (b'x' * 100),
      iface='c1-eth0', verbose=False)
print('sent', flush=True)
"""


@pytest.mark.parametrize("liberal", [False, True])
def test_a_kernel_node_drops_a_segment_outside_the_window_unless_liberal(cluster_factory,
                                                                          tmp_path, liberal):
    """The same probe through a kernel node: conntrack takes the segment 1 GB ahead for
    ct state invalid and the ruleset drops it."""
    cluster = cluster_factory(n=1, node="kernel", tcp_liberal=liberal)
    assert cluster.ask("fw1", "config")["firewall"]["tcp_liberal"] is liberal
    client, out = download(cluster, tmp_path)
    before = drops(cluster, "invalid")
    watch = cluster.spawn("sniff-srv1", [sys.executable, "-c", SNIFF_INJECTED],
                          host=cluster.net["srv1"])
    wait_until(lambda: "listening" in watch.log_tail(), 15, "the sniffer on srv1")
    script = tmp_path / "inject.py"
    script.write_text(INJECT_AHEAD.format(server=server_ip(1), mac=server_mac(1)))
    said = cluster.net["c1"].cmd(f"{sys.executable} {script}")
    assert "sent" in said, said
    verdict = wait_until(lambda: next((w for w in ("not arrived", "arrived")
                                       if w in watch.log_tail()), None),
                         20, "the sniffer's verdict")
    if liberal:
        assert verdict == "arrived" and drops(cluster, "invalid") == before
    else:
        assert verdict == "not arrived"
        assert drops(cluster, "invalid") == before + 1
    wait_until(lambda: not client.alive(), 60, "the download to end")
    from experiments.analysis.attribution import read_jsonl
    (record,) = read_jsonl(str(out))
    assert record["outcome"] == "ok" and record["bytes"] == SIZE
