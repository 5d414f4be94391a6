"""Kernel nodes (issue 15): nftables + conntrack + conntrackd in the same testbed,
with the same rule file, traffic and faults as the Python nodes."""
import sys

import pytest

from experiments.workload import run_ftp, start_ftp_servers
from experiments.files import make_files
from tests.integration.test_failover import controller_events, download, finish
from topo import faults
from topo.addresses import client_ip, server_ip
from topo.errors import SetupError
from topo.procs import wait_until

pytestmark = pytest.mark.mininet
MODES = ["active", "passive", "eprt", "epsv"]

PROBE = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.settimeout(1.0)
try:
    s.connect((host, port)); print("connected")
except ConnectionRefusedError:
    print("refused")  # the SYN went through, nothing listens: a RST came back
except OSError:
    print("timeout")  # dropped
"""


UDP_PROBE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    s.send(b"anyone?"); s.recv(64); print("answered")
except ConnectionRefusedError:
    print("refused")  # the port unreachable came back through the firewall
except OSError:
    print("timeout")
"""


def probe(cluster, src: str, dst: str, port: int, script: str = PROBE) -> str:
    proc = cluster.net[src].popen([sys.executable, "-c", script, dst, str(port)])
    return proc.communicate(timeout=10)[0].decode().strip()


def verdicts(cluster, tmp_path) -> dict:
    root = tmp_path / "ftp"
    make_files(str(root), 1, 1000, seed=1)
    start_ftp_servers(cluster, str(root))
    ping = cluster.net["c1"].cmd("ping -c1 -W1", server_ip(1), ">/dev/null && echo ok || echo no")
    # 3000 bytes: fragments both ways, judged as their datagram (Linux: nf_defrag)
    big = cluster.net["c1"].cmd("ping -c2 -W1 -s 3000", server_ip(1),
                                ">/dev/null && echo ok || echo no")
    return {"ftp": probe(cluster, "c1", server_ip(1), 21),
            "allowed_port_closed": probe(cluster, "c1", server_ip(1), 5001),
            "denied_port": probe(cluster, "c1", server_ip(1), 22),
            "inside_out": probe(cluster, "srv1", client_ip(1), 21),
            # nothing listens on the UDP probe's port: the server's ICMP port
            # unreachable is related to the datagram's connection (no rule lets
            # the inside send ICMP out)
            "udp_closed_port": probe(cluster, "c1", server_ip(1), 5002, UDP_PROBE),
            "ping": ping.strip(), "big_ping": big.strip()}


def test_the_same_rule_file_gives_the_same_verdicts_on_both_kinds(cluster_factory, tmp_path):
    seen = {}
    for kind in ("python", "kernel"):
        cluster = cluster_factory(n=1, node=kind)
        seen[kind] = verdicts(cluster, tmp_path / kind)
        cluster.stop()
    assert seen["python"] == seen["kernel"] == {
        "ftp": "connected", "allowed_port_closed": "refused", "denied_port": "timeout",
        "inside_out": "timeout", "udp_closed_port": "refused", "ping": "ok", "big_ping": "ok"}


def sessions(cluster, tmp_path, n=16, records=None):
    done = run_ftp(cluster, str(tmp_path), n, MODES, 20000, 2, 4, 6, 1)
    if records is not None:
        records += done
    return [r["outcome"] for r in done]


def test_without_sync_data_connections_on_other_nodes_fail(cluster_factory, tmp_path):
    cluster = cluster_factory(n=3, node="kernel")
    records = []
    outcomes = sessions(cluster, tmp_path, records=records)
    assert 0 < outcomes.count("ok") < len(outcomes)  # as with Python nodes (no state there)
    stats = {n: cluster.ask(n, "stats") for n in cluster.node_names()}
    assert all(s["kind"] == "kernel" and s["conntrackd"] is None for s in stats.values())
    # the data connections' SYNs met a node without the expectation: the final deny
    assert sum(s["drops"].get("policy", 0) for s in stats.values()) > 0
    # The nodes' event logs say which node carried and which refused what, as the
    # Python nodes' do: the experiments' analyses read them alike.
    from experiments.analysis.attribution import attribute, node_events
    done = wait_until(lambda: (lambda a: a if all(r["control_node"] for r in a) else None)(
        attribute(records, node_events(cluster.run_dir))), 5, "every session's control node")
    failed = [r for r in done if r["outcome"] != "ok"]
    assert failed and all(r["data_refusals"] > 0 and r["data_node"] != r["control_node"]
                          for r in failed), failed
    assert all(r["data_verdict"] == "accepted" for r in done if r["outcome"] == "ok")


@pytest.mark.parametrize("n,conntrackd", [(2, "ftfw"), (3, "notrack")])
def test_with_conntrackd_every_session_succeeds(cluster_factory, tmp_path, n, conntrackd):
    """Entries go into every node's kernel as they arrive (external_cache False, the
    multiprimary setup), expectations too (ExpectationSync): a data connection that
    lands on another node finds its expectation there, or TCP retries its SYN."""
    cluster = cluster_factory(n=n, node="kernel", sync={"mode": "ondemand"},
                              conntrackd=conntrackd, external_cache=False)
    assert all(o == "ok" for o in sessions(cluster, tmp_path))
    dump = cluster.ask("fw2", "dump")
    assert any(e["helper"] == "ftp" for e in dump["entries"])  # the control connections
    assert cluster.ask("fw1", "stats")["sync"]["conntrackd"]["cache internal"]


@pytest.mark.parametrize("commit,survives", [("before_steer", True), ("never", False)])
def test_a_crash_of_the_carrier_with_commit(cluster_factory, tmp_path, commit, survives):
    """keepalived's way: the backup commits conntrackd's external cache into its kernel
    (conntrackd -c) before the dead node's traffic is moved to it. Without the commit
    the backup has no entry for the download and drops it."""
    cluster = cluster_factory(n=2, node="kernel", sync={"mode": "ondemand"}, failover="backup",
                              commit=commit)
    client, out = download(cluster, tmp_path, attempts=8)  # data on its control's node
    carrier = wait_until(lambda: next((n for n in cluster.node_names() if any(
        e["proto"] == 6 and e["state"] == "ESTABLISHED" and not e["orig"].endswith(":21")
        for e in cluster.ask(n, "dump")["entries"])), None), 5, "the download's node")
    faults.crash(cluster, carrier)
    record = finish(client, out)
    (down,) = [e for e in controller_events(cluster) if e["event"] == "node_down"]
    assert down["node"] == carrier and down["commit"] == commit
    if survives:
        assert record["outcome"] == "ok", record  # every byte, checksum verified
        (heir,) = down["commit_ms"]
        assert down["commit_ms"][heir] is not None  # the commit was done before steering
    else:
        assert record["outcome"] != "ok"


def test_a_restarted_node_has_its_connections_before_it_takes_them_back(cluster_factory,
                                                                        tmp_path):
    """A rejoining kernel node gets its buckets back at its first heartbeat; its
    resync (conntrackd -n) lands in the external cache, so it must be committed by
    then. The probe's stream is replies only and its client says hello once: a node
    without the flow's state drops the stream for good."""
    from experiments.bench_failover import UDP_PORT, udp_carrier
    cluster = cluster_factory(n=2, node="kernel", sync={"mode": "ondemand"}, failover="backup")
    server = cluster.spawn("probe-server", [sys.executable, "-m", "experiments.probe",
                                            "udp-server", "--address", server_ip(1), "--port",
                                            str(UDP_PORT), "--interval", "0.002"],
                           host=cluster.net["srv1"])
    wait_until(lambda: "ready" in server.log_tail(), 10, "the probe server")
    client = cluster.spawn("probe-client", [sys.executable, "-m", "experiments.probe",
                                            "udp-client", "--address", server_ip(1), "--port",
                                            str(UDP_PORT), "--hello", "600",
                                            "--out", str(tmp_path / "gaps.jsonl")],
                           host=cluster.net["c1"])

    def received():
        lines = [ln for ln in client.log_tail(5).splitlines() if ln.startswith("probe received")]
        return int(lines[-1].split()[-1]) if lines else 0

    def flowing(after: int):
        return wait_until(lambda: (lambda n: n if n > after + 50 else 0)(received()), 10,
                          "the stream to come through")

    flowing(0)
    carrier = wait_until(lambda: udp_carrier(cluster), 10, "the stream's node")
    faults.crash(cluster, carrier)
    flowing(received())  # through the backup, which committed the flow
    faults.restart(cluster, carrier)
    cluster.wait_ready()
    wait_until(lambda: udp_carrier(cluster) == carrier, 15, f"{carrier} to take it back")
    flowing(received())  # through the restarted node: it had the state first
    assert cluster.ask(carrier, "stats")["counters"]["commits"] >= 1


def test_what_a_kernel_node_cannot_do_is_refused_in_one_line(cluster_factory):
    with pytest.raises(SetupError, match="conntrackd sends every entry to every node"):
        cluster_factory(n=3, node="kernel", sync={"mode": "ondemand", "replication": "backup"})
    with pytest.raises(SetupError, match="sync hold"):
        cluster_factory(n=3, node="kernel", sync={"mode": "ondemand", "hold": True})
    cluster = cluster_factory(n=2, node="kernel", sync={"mode": "ondemand"}, failover="backup")
    with pytest.raises(SetupError, match="hang: not on kernel nodes"):
        faults.hang(cluster, "fw1")
    assert "not on a kernel node" in cluster.ask("fw1", "set mode=periodic")["error"]


def test_the_consistency_check_reads_conntrackds_caches(cluster_factory, tmp_path):
    """conntrackd's promise, checked: each node's own connections (its internal
    cache) are among the other's copies (here its kernel table: external cache
    off), in the same state. Make one node deaf to the other, open connections
    through both: the deaf node misses the other's, and only it."""
    cluster = cluster_factory(n=2, node="kernel", sync={"mode": "ondemand"}, failover="backup",
                              external_cache=False)  # copies in the kernel: every session works
    assert all(o == "ok" for o in sessions(cluster, tmp_path, n=8))
    # the control connections stay in TIME_WAIT for 120 s: settled entries to check
    report = wait_until(lambda: (lambda r: r if r.checked and r.ok else None)(
        cluster.consistency()), 10, "a quiet cluster to pass the check")
    assert report.promised and report.mode == "conntrackd ftfw"
    faults.sync_loss(cluster, "fw2", 100)  # fw2 hears nothing from fw1 any more
    sessions(cluster, tmp_path / "deaf", n=6)  # their control connections stay, TIME_WAIT
    bad = wait_until(lambda: (lambda r: r if any(v[0] == "missing_on_backup" and v[1] == "fw2"
                                                 for v in r.violations) else None)(
        cluster.consistency()), 10, "the check to find what fw2 did not hear")
    assert not [v for v in bad.violations if v[1] != "fw2"]  # fw1 heard fw2's
