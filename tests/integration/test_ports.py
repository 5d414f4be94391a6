"""A node keeps forwarding after a flood has overrun it (both port kinds)."""
import os
import subprocess
import sys

import pytest

from experiments import bench
from nodes.observe.client import ask
from topo.procs import Proc, wait_until

pytestmark = pytest.mark.mininet  # needs root for network namespaces

FLOOD = """
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, sent = time.time() + 1.5, 0
while time.time() < end:
    try:
        s.sendto(b"x" * 22, ("10.9.0.2", 5201))
        sent += 1
    except OSError:
        pass
print(sent)
"""


@pytest.fixture
def namespaces():
    bench.build()
    yield
    bench.teardown()
    assert not any(ns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout for ns in bench.NS)


@pytest.mark.parametrize("variant", ["txring", "socket"])
def test_node_forwards_again_after_a_flood(namespaces, tmp_path, variant):
    rules = tmp_path / "r.rules"
    rules.write_text(bench.RULES + "10.9.0.1 10.9.0.2 icmp any accept\n")
    sock = str(tmp_path / "fw.sock")
    node = Proc("fw", ["ip", "netns", "exec", "fwb-fw", "taskset", "-c", bench.NODE_CPU,
                       sys.executable, "-m", "nodes.shell.node", "--name", "fw1", "--outside", "fwa",
                       "--inside", "fwb", "--rules", str(rules), "--control", sock]
                + (["--no-ring"] if variant == "socket" else []), str(tmp_path / "fw.log"))
    try:
        wait_until(lambda: os.path.exists(sock), 10, "the node")
        assert ask(sock, "stats")["port_kind"] == variant
        sent = int(subprocess.run(["ip", "netns", "exec", "fwb-a", sys.executable, "-c", FLOOD],
                                  check=True, capture_output=True, text=True).stdout)
        stats = wait_until(lambda: (lambda s: s if s["packets_in"]["outside"] + s["rx_dropped"][
            "outside"] >= 0.95 * sent else None)(ask(sock, "stats")), 10,
            "the node to have read or counted as dropped what was sent")
        flooded = stats["packets_in"]["outside"]
        assert flooded > 10000
        print(f"sent {sent}, read {flooded}, dropped before reading {stats['rx_dropped']}")

        def pings():
            return subprocess.run(["ip", "netns", "exec", "fwb-a", "ping", "-c", "1", "-W", "1",
                                   "10.9.0.2"], capture_output=True).returncode == 0
        wait_until(pings, 10, "a ping through the node after the flood")
        assert node.alive()
    finally:
        node.stop()
