"""The kernel fast path with real traffic (issue 17): a download's counters, its
replication and its failover are the same with the fast path on and off; the
connection is really forwarded by the node's kernel when on; it is switched at run
time; a node that cannot have it says so in one line.
"""
import pytest

from tests.integration.test_failover import SIZE, carrier, crash_the_carrier, download, finish
from topo.procs import wait_until

pytestmark = pytest.mark.mininet


def data_entry(cluster, node):
    """``node``'s entry of the download's data connection (related to the control one)."""
    return next((e for e in cluster.ask(node, "dump")["entries"] if e["related_to"]), None)


def offloaded(cluster, node):
    return cluster.ask(node, "stats")["fastpath"]["offloaded"]


@pytest.mark.parametrize("fastpath", [None, "on"])
def test_a_downloads_counters_and_its_copy_are_the_same_with_the_fast_path(cluster_factory,
                                                                           tmp_path, fastpath):
    cluster = cluster_factory(n=2, sync={"mode": "ondemand", "window_sync": "change"},
                              fastpath=fastpath)
    client, out = download(cluster, tmp_path)
    node = wait_until(lambda: carrier(cluster), 5, "the data connection's node")
    backup = next(n for n in cluster.node_names() if n != node)
    if fastpath:
        wait_until(lambda: offloaded(cluster, node) == 1, 5, "the data connection offloaded")
        # the control connection has the FTP helper: it stays in the engine
        assert len(cluster.ask(node, "dump")["entries"]) == 2
    copy = wait_until(lambda: data_entry(cluster, backup), 5, "the backup's copy")
    assert copy["owner"] == node and copy["state"] == "ESTABLISHED"
    record = finish(client, out)
    assert record["outcome"] == "ok" and record["bytes"] == SIZE
    # the FIN came back to the engine: withdrawn, and the entry closed as without
    entry = wait_until(lambda: (lambda e: e if e and e["state"] != "ESTABLISHED" else None)(
        data_entry(cluster, node)), 5, "the data connection to close")
    stats = cluster.ask(node, "stats")
    # the file, in IP bytes, server to client: the data and at most 8% of headers and
    # retransmissions
    assert SIZE < entry["l3_bytes"][1] < SIZE * 1.08, entry
    assert entry["packets"][0] > 0 and entry["packets"][1] > SIZE // 1500
    if fastpath:
        assert stats["fastpath"]["offloaded"] == 0
        assert stats["fastpath"]["fastpath_withdrawn_flags"] >= 1
        # nearly every packet went through the kernel, not the engine
        assert stats["fastpath"]["fastpath_packets"] > 0.9 * sum(entry["packets"])
        assert sum(stats["packets_in"].values()) < 0.1 * sum(entry["packets"])
    else:
        assert stats["fastpath"]["kernel"] is None
        assert sum(stats["packets_in"].values()) >= sum(entry["packets"])


@pytest.mark.parametrize("fastpath", [None, "on"])
def test_a_download_survives_the_crash_of_its_node_with_the_fast_path(cluster_factory,
                                                                      tmp_path, fastpath):
    """The copy of an offloaded connection carries its window as unknown (the owner's
    kernel forwards it unchecked); the heir learns the window from the next segments
    and refuses none of them."""
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "window_sync": "change"},
                              failover="backup", fastpath=fastpath)
    client, out = download(cluster, tmp_path)
    if fastpath:
        wait_until(lambda: carrier(cluster) and offloaded(cluster, carrier(cluster)) == 1, 5,
                   "the data connection offloaded")
    node, record = crash_the_carrier(cluster, client, out)
    assert record["outcome"] == "ok" and record["bytes"] == SIZE, record
    survivors = [n for n in cluster.node_names() if n != node]
    assert sum(cluster.ask(n, "stats")["drops"].get("tcp_out_of_window", 0)
               for n in survivors) == 0


def test_the_fast_path_is_switched_at_run_time(cluster_factory, tmp_path):
    cluster = cluster_factory(n=1, fastpath="off")
    client, out = download(cluster, tmp_path)
    assert offloaded(cluster, "fw1") == 0
    cluster.set_sync("fastpath=on", ["fw1"])
    wait_until(lambda: offloaded(cluster, "fw1") == 1, 5, "the data connection offloaded")
    cluster.set_sync("fastpath=off", ["fw1"])
    stats = cluster.ask("fw1", "stats")["fastpath"]
    assert stats["offloaded"] == 0 and stats["fastpath_withdrawn_switched_off"] == 1
    record = finish(client, out)
    assert record["outcome"] == "ok" and record["bytes"] == SIZE


def test_a_node_without_the_fast_path_refuses_the_switch_in_one_line(cluster_factory):
    cluster = cluster_factory(n=1)
    answer = cluster.ask("fw1", "set fastpath=on")
    assert answer["error"].startswith("fastpath: this node has no kernel fast path")
    assert "\n" not in answer["error"]
