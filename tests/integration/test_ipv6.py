"""IPv6 through real clusters (issue 16): ping6 and a large one (fragments), FTP over IPv6 (EPRT
|2| and EPSV) and dual-stack sessions through Python and kernel nodes with sync, a
TCP stream over IPv6, and an IPv6 download taken over by the backup of its node."""
import json

import pytest

from experiments.workload import run_ftp
from tests.integration.test_failover import SIZE, crash_the_carrier, download
from topo.addresses import client_ip6, server_ip6
from topo.procs import wait_until

pytestmark = pytest.mark.mininet


def counters(cluster, name):
    return sum(cluster.ask(n, "stats")["counters"].get(name, 0) for n in cluster.node_names())


def test_ipv6_ping_and_ftp_over_ipv6_through_a_synchronized_cluster(cluster_factory, tmp_path):
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "hold": True})
    said = cluster.net["c1"].cmd(f"ping -6 -c 3 -i 0.2 -W 2 {server_ip6(1)}")
    assert " 0% packet loss" in said, said
    big = cluster.net["c1"].cmd(f"ping -6 -c 2 -i 0.2 -W 2 -s 3000 {server_ip6(1)}")
    assert " 0% packet loss" in big, big  # fragments, reassembled to be judged
    assert counters(cluster, "fragments_forwarded") >= 8  # 3 a ping each way, at least
    records = run_ftp(cluster, str(tmp_path), 12, ["EPRT", "EPSV"], 65536, 2, 4, 3.0, 1,
                      family="ipv6")
    assert len(records) == 12 and [r for r in records if r["outcome"] != "ok"] == []
    assert all(":" in r["control"][0] and ":" in r["data"][0] for r in records)
    assert counters(cluster, "ftp_expectations") == 12
    assert counters(cluster, "nd_passed") > 0  # the hosts found each other through the nodes
    drops = {n: cluster.ask(n, "stats")["drops"] for n in cluster.node_names()}
    assert not any(d.get("policy") or d.get("frag_overlap") for d in drops.values()), drops


def test_dual_stack_sessions_through_kernel_nodes_with_conntrackd(cluster_factory, tmp_path):
    # entries into the kernel as they arrive (external_cache False), as the kernel
    # node test of every session's success does: IPv6 entries and expectations go too
    cluster = cluster_factory(n=2, node="kernel", sync={"mode": "ondemand"},
                              external_cache=False)
    records = run_ftp(cluster, str(tmp_path), 16, ["PASV", "EPSV", "PORT", "EPRT"], 65536, 2,
                      4, 3.0, 2, family="dual")
    assert [r for r in records if r["outcome"] != "ok"] == []
    families = {r["mode"]: ":" in r["control"][0] for r in records}
    assert families == {"PASV": False, "PORT": False, "EPSV": True, "EPRT": True}
    listing = "\n".join(cluster.net[n].cmd("conntrack -L -f ipv6 2>/dev/null")
                        for n in cluster.node_names())
    assert "src=fd00::1:" in listing  # the kernel tracked IPv6 connections


def test_a_tcp_stream_over_ipv6_passes_a_node(cluster_factory):
    cluster = cluster_factory(n=1)
    cluster.spawn("iperf-server", ["iperf3", "-s", "-1", "-p", "5001", "-B", server_ip6(1)],
                  host=cluster.net["srv1"])

    def stream():  # tried until the server listens (its output is buffered: poll the client)
        out = cluster.net["c1"].cmd(f"iperf3 -6 -c {server_ip6(1)} -p 5001 -t 2 -J")
        try:
            data = json.loads(out)
        except ValueError:
            return None
        return data if "end" in data and not data.get("error") else None
    result = wait_until(stream, 20, "an iperf3 stream over IPv6")
    assert result["end"]["sum_received"]["bytes"] > 1 << 20
    assert any(e["tuple"]["dport"] == 5001 and e["tuple"]["src"] == client_ip6(1)
               for e in cluster.ask("fw1", "dump")["entries"])  # tracked by its IPv6 key
    assert cluster.ask("fw1", "stats")["drops"].get("tcp_out_of_window", 0) == 0


def test_an_ipv6_download_survives_the_crash_of_its_node(cluster_factory, tmp_path):
    cluster = cluster_factory(n=3, sync={"mode": "ondemand", "window_sync": "change"},
                              failover="backup")
    client, out = download(cluster, tmp_path, mode="EPSV", server=server_ip6(1))
    _, record = crash_the_carrier(cluster, client, out)
    assert record["outcome"] == "ok" and record["bytes"] == SIZE, record
    assert ":" in record["data"][0]
