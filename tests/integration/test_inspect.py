"""fw-inspect against a live node: table, expectations and counters."""
import subprocess
import sys

import pytest

from topo.addresses import server_ip
from topo.procs import wait_until

pytestmark = pytest.mark.mininet

HOLD_PASV = f"""
import ftplib, time
ftp = ftplib.FTP("{server_ip(1)}", timeout=5)
ftp.login()
print(ftp.sendcmd("PASV"), flush=True)
time.sleep(60)
"""


def inspect(cluster, *args):
    out = subprocess.run([sys.executable, "-m", "nodes.observe.inspect", "fw1", "--run-id",
                          cluster.run_id, *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_inspect_shows_entry_expectation_and_counters(cluster_factory, tmp_path):
    cluster = cluster_factory(n=1)
    root = tmp_path / "ftp"
    root.mkdir()
    server = cluster.spawn("ftpd", [sys.executable, "-m", "experiments.ftp_server", "--root",
                                    str(root), "--address", server_ip(1)], host=cluster.net["srv1"])
    wait_until(lambda: "ready" in server.log_tail(), 10, "the FTP server")
    client = cluster.spawn("hold", [sys.executable, "-c", HOLD_PASV], host=cluster.net["c1"])
    wait_until(lambda: "227" in client.log_tail(), 10, "the PASV reply")

    table = inspect(cluster)
    control = [line for line in table.splitlines() if "dport=21 " in line]
    assert len(control) == 1 and "ESTABLISHED" in control[0]
    assert "helper=ftp" in control[0] and "owner=fw1" in control[0]
    expectations = inspect(cluster, "-X").splitlines()
    assert len(expectations) == 1 and f"dst={server_ip(1)}" in expectations[0]
    stats = inspect(cluster, "-s")
    assert "connections:" in stats and "ftp_expectations" in stats
    assert "entries_created" in stats

    missing = subprocess.run([sys.executable, "-m", "nodes.observe.inspect", "fw9", "--run-id",
                              cluster.run_id], capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot reach node fw9" in missing.stderr
