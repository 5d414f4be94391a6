"""State synchronization in a real 3-node cluster (issue 3)."""
import pytest

from tests.integration.test_cluster import MODES, flushed_events, ftp
from topo import faults
from topo.procs import wait_until

pytestmark = pytest.mark.mininet


def sync_stats(cluster):
    return {n: cluster.ask(n, "stats") for n in cluster.node_names()}


def test_on_demand_sync_with_hold_carries_every_ftp_session(cluster_factory):
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "hold": True})
    records, _ = ftp(cluster, 50, seed=3)
    records = flushed_events(cluster, records)
    assert len(records) == 50 and {r["mode"] for r in records} == set(MODES)
    assert [r for r in records if r["outcome"] != "ok"] == []  # checksums verified
    assert sum(r["same_node"] is False for r in records) >= 10  # the race was there to lose
    stats = sync_stats(cluster)
    assert sum(s["counters"].get("holds_completed", 0) for s in stats.values()) == 50
    assert sum(s["counters"].get("holds_timed_out", 0) for s in stats.values()) == 0
    assert sum(s["drops"].get("policy", 0) for s in stats.values()) == 0  # no SYN refused


def test_periodic_sync_with_a_long_interval_loses_related_connections(cluster_factory):
    cluster = cluster_factory(n=3, sync={"mode": "periodic", "interval": 30.0})
    records, _ = ftp(cluster, 16, seed=4)
    records = flushed_events(cluster, records)
    elsewhere = [r for r in records if r["same_node"] is False]
    assert elsewhere and all(r["outcome"] != "ok" for r in elsewhere)
    assert all(r["outcome"] == "ok" for r in records if r["same_node"])
    refused = sum(s["drops"].get("policy", 0) for s in sync_stats(cluster).values())
    assert refused >= len(elsewhere)


def test_backup_groups_hold_their_predecessors_entries_not_all(cluster_factory):
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "k": 1})
    ftp(cluster, 24, seed=5)
    sync = {n: s["sync"] for n, s in sync_stats(cluster).items()}
    assert sync["fw1"]["backups"] == [2] and sync["fw2"]["backups"] == [3]
    # cyclic, k = 1: fw2 holds fw1's entries, fw3 fw2's, fw1 fw3's, and nothing more
    assert sync["fw2"]["entries_backup"] == sync["fw1"]["entries_owned"]
    assert sync["fw3"]["entries_backup"] == sync["fw2"]["entries_owned"]
    assert sync["fw1"]["entries_backup"] == sync["fw3"]["entries_owned"]
    total = sum(s["entries_owned"] for s in sync.values())
    for s in sync.values():
        assert s["entries_owned"] + s["entries_backup"] < total


LOSS = ("nft add table netdev fwloss; "
        "nft add chain netdev fwloss c '{{ type filter hook ingress device \"{intf}\" priority 0; "
        "policy accept; }}'; "
        "nft add rule netdev fwloss c numgen random mod 100 '<' {percent} counter drop")


def test_nothing_is_lost_with_ten_percent_loss_on_the_sync_link(cluster_factory):
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "hold": True,
                                         "replication": "full"})
    for node in cluster.node_names():
        out = cluster.net[node].cmd(LOSS.format(intf=f"{node}-eth2", percent=10))
        assert "Error" not in out, out
    records, _ = ftp(cluster, 24, seed=6)
    assert [r for r in records if r["outcome"] != "ok"] == []
    dropped = sum(int(cluster.net[n].cmd("nft list table netdev fwloss | grep -o 'packets [0-9]*'"
                                         ).split()[1]) for n in cluster.node_names())
    assert dropped > 0

    def settled():  # full replication: every node ends with every entry, once the
        stats = sync_stats(cluster)  # retransmissions of what was lost have arrived
        counts = {n: s["entries"] for n, s in stats.items()}
        return stats if len(set(counts.values())) == 1 else None
    try:
        stats = wait_until(settled, 5, "every node to hold every entry")
    except TimeoutError:
        raise AssertionError({n: s["entries"] for n, s in sync_stats(cluster).items()})
    assert sum(s["sync"]["counters"].get("retransmissions", 0) for s in stats.values()) > 0


def test_sync_mode_can_be_switched_at_run_time(cluster_factory):
    cluster = cluster_factory(n=2, sync={"mode": "ondemand"})
    answer = cluster.ask("fw1", "set mode=periodic interval=5")
    assert answer.get("ok") and answer["sync"]["mode"] == "periodic"
    assert "mode = 'sometimes': must be 'none'" in cluster.ask("fw1", "set mode=sometimes")["error"]
    assert "cannot set" in cluster.ask("fw1", "set key=x")["error"]
    assert cluster.ask("fw1", "stats")["sync"]["mode"] == "periodic"


def test_inspection_shows_the_sync_counters(cluster_factory):
    import subprocess
    import sys
    cluster = cluster_factory(n=3, sync={"mode": "ondemand"})
    ftp(cluster, 4, seed=7)
    out = subprocess.run([sys.executable, "-m", "nodes.observe.inspect", "fw2", "-s", "--run-id",
                          cluster.run_id], capture_output=True, text=True).stdout
    assert "sync: mode ondemand, alive [1, 2, 3], backed up by fw3" in out
    assert "entries owned / backup / common" in out and "messages_sent" in out
    assert "rejected by reason" in out


def test_crash_adoption_and_a_restarted_node_receiving_its_state(cluster_factory):
    from topo.procs import wait_until
    cluster = cluster_factory(n=3, sync={"mode": "ondemand"})
    ftp(cluster, 12, seed=8)  # closed connections stay in TIME_WAIT: state to carry

    def sync(node):
        return cluster.ask(node, "stats")["sync"]
    owned_by_fw1 = sync("fw1")["entries_owned"]
    assert owned_by_fw1 > 0
    faults.crash(cluster, "fw1")
    wait_until(lambda: sync("fw2")["alive"] == sync("fw3")["alive"] == [2, 3], 5,
               "fw2 and fw3 to see fw1 gone")
    assert sync("fw2")["counters"]["entries_adopted"] == owned_by_fw1  # fw2 backed up fw1
    wait_until(lambda: sync("fw3")["entries_backup"] == sync("fw2")["entries_owned"], 5,
               "fw3 to back up fw2, adopted entries included")

    faults.restart(cluster, "fw1")
    cluster.wait_ready()
    fw1 = sync("fw1")
    assert fw1["ready"] and fw1["counters"]["bulk_records_received"] > 0
    wait_until(lambda: sync("fw1")["entries_backup"] == sync("fw3")["entries_owned"] > 0, 5,
               "the restarted fw1 to hold fw3's entries again")
    assert sync("fw1")["alive"] == sync("fw2")["alive"] == [1, 2, 3]


def test_mode_home_forwards_data_connections_to_the_home_node(cluster_factory):
    cluster = cluster_factory(n=3, sync={"mode": "home"})
    records, _ = ftp(cluster, 24, seed=9)
    records = flushed_events(cluster, records)
    assert [r for r in records if r["outcome"] != "ok"] == []  # checksums verified
    stats = {n: cluster.ask(n, "stats") for n in cluster.node_names()}
    home = [s["home"]["counters"] for s in stats.values()]
    assert sum(c.get("forwarded_packets", 0) for c in home) > 0
    assert sum(c.get("answers_sent", 0) for c in home) >= sum(
        c.get("answers_received", 0) for c in home) > 0
    # each query is multicast once, to the group every node joined, and heard by
    # the two other nodes (UDP: a query may be lost, as the packet might be)
    for node in cluster.node_names():
        assert "239.255.37.80" in cluster.net[node].cmd("ip maddr show dev", f"{node}-eth2")
    sent = sum(c.get("queries_sent", 0) for c in home)
    assert 2 * sent >= sum(c.get("queries_received", 0) for c in home) >= 1.8 * sent > 0
    # unreplicated: every connection's state is on exactly one node
    keys = [e["orig"] for s in cluster.node_names() for e in cluster.ask(s, "dump")["entries"]]
    assert len(keys) == len(set(keys))


def test_mode_home_with_asymmetric_steering(cluster_factory):
    cluster = cluster_factory(n=3, sync={"mode": "home"}, steering="asymmetric")
    records, _ = ftp(cluster, 16, seed=10)
    assert [r for r in records if r["outcome"] != "ok"] == []
    home = [cluster.ask(n, "stats")["home"]["counters"] for n in cluster.node_names()]
    # most replies now cross another node than their connection's home
    assert sum(c.get("forwarded_packets", 0) for c in home) > 100


def test_inter_node_latency_delays_discovery_and_sessions_still_work(cluster_factory):
    one_way = 0.015
    cluster = cluster_factory(n=3, sync={"mode": "home"}, steering="asymmetric",
                              latency=one_way)
    assert cluster.latency_via in ("netem", "node")  # what this kernel offers, never silent
    records, _ = ftp(cluster, 8, seed=11)
    assert [r for r in records if r["outcome"] != "ok"] == []
    stats = [cluster.ask(n, "stats") for n in cluster.node_names()]
    expected = one_way * 1000 if cluster.latency_via == "node" else 0.0
    assert [s["sync"]["cluster_delay_ms"] for s in stats] == [pytest.approx(expected)] * 3, \
        cluster.latency_via
    # a query and its answer cross the cluster network once each: a round trip
    discovery = [s["home"]["discovery_ms"] for s in stats if s["home"]["discovery_ms"]]
    assert discovery and min(d["p50"] for d in discovery) >= 2 * one_way * 1000
