"""Prometheus metrics of a running cluster, scraped over HTTP while FTP runs through it."""
import socket
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from experiments.workload import run_ftp
from nodes.observe.metrics import CONTENT_TYPE
from topo.net import free_port
from topo.procs import wait_until
from topo import faults

pytestmark = pytest.mark.mininet


def scrape(url: str) -> dict[str, float]:
    """One scrape, as Prometheus's parser reads it: sample (name and labels) -> value;
    checks the content type."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"] == CONTENT_TYPE
        text = answer.read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):  # Prometheus's own parser
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def metric_ports() -> int:
    """A port p with p + 1 free too (nodes on p, controller on p + 1)."""
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two free ports in a row")


def test_metrics_are_scraped_during_a_run(cluster_factory):
    port = metric_ports()
    cluster = cluster_factory(n=3, sync={"mode": "ondemand"}, failover="backup",
                              metrics_port=port)
    nodes, controller = (f"http://127.0.0.1:{p}/metrics" for p in (port, port + 1))
    before = scrape(nodes)
    assert all(before[f'fwcluster_node_up{{node="fw{i}"}}'] == 1 for i in (1, 2, 3))
    done = []
    # Slow downloads, so connections are open while we scrape.
    traffic = threading.Thread(target=lambda: done.append(run_ftp(
        cluster, cluster.run_dir, 6, ["PASV", "PORT"], 400_000, 2, 6, 3.0, 1,
        throttle=400_000)))
    traffic.start()
    try:
        def busy():
            s = scrape(nodes)
            own = sum(v for k, v in s.items() if k.startswith("fwcluster_connections{")
                      and 'role="own"' in k)
            copies = sum(v for k, v in s.items() if k.startswith("fwcluster_connections{")
                         and 'role="copy"' in k)
            return s if own >= 2 and copies >= 2 else None
        during = wait_until(busy, 20, "open connections and their copies in the metrics")
        packets = lambda s: sum(v for k, v in s.items()  # noqa: E731
                                if k.startswith("fwcluster_packets_in_total{"))
        assert packets(during) > packets(before)
        assert any(k.startswith('fwcluster_sync_total{counter="messages_sent"') and v > 0
                   for k, v in during.items())
        ctl = scrape(controller)
        assert ctl["fwcluster_controller_switches"] == 2
        assert sum(ctl[f'fwcluster_controller_buckets{{node="fw{i}"}}'] for i in (1, 2, 3)) == 64
        assert ctl['fwcluster_controller_heartbeats_total{node="fw1"}'] > 0
    finally:
        traffic.join(120)
    assert done and all(r["outcome"] == "ok" for r in done[0]), done
    faults.crash(cluster, "fw2")
    wait_until(lambda: scrape(controller)['fwcluster_controller_node_live{node="fw2"}'] == 0,
               5, "the controller to count fw2 out")
    after = scrape(nodes)
    assert after['fwcluster_node_up{node="fw2"}'] == 0
    assert scrape(controller)['fwcluster_controller_total{counter="node_down"}'] == 1
