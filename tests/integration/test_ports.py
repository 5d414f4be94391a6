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


OPEN_PORTS = """
import sys, time
from nodes.shell.ports import RingPort, SocketPort
kind, opens = sys.argv[1], int(sys.argv[2])
strays = 0
for _ in range(opens):
    port = (RingPort if kind == "txring" else SocketPort)("fwa")
    time.sleep(0.002)  # whatever the socket queued while it opened is read now
    strays += sum(1 for f in port.recv_batch(1000) if b"STRAY-FRAME" in f)
    port.close()
print(strays)
"""

FLOOD_B = """
import socket, sys, time
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
frame = bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src="10.9.1.9", dst="10.9.1.1")
              / UDP(dport=3780) / b"STRAY-FRAME")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("b0", 0))
end = time.time() + float(sys.argv[1])
while time.time() < end:
    s.send(frame)
"""


@pytest.mark.parametrize("variant", ["txring", "socket"])
def test_a_port_opening_reads_no_frame_of_another_interface(namespaces, variant):
    """A packet socket made with ETH_P_ALL hears every interface of its namespace
    until bind() names one; what it queued meanwhile would be read as the port's.
    (This is how a sync heartbeat arriving on eth2 reached a node's data port and
    was carried in a HOME_QUERY.) Frames flood the other interface while the port
    opens, again and again: none may be read on this one."""
    flood = subprocess.Popen(["ip", "netns", "exec", "fwb-b", sys.executable, "-c", FLOOD_B, "20"],
                             cwd=os.getcwd())
    try:
        strays = int(subprocess.run(["ip", "netns", "exec", "fwb-fw", sys.executable, "-c",
                                     OPEN_PORTS, variant, "200"], check=True, capture_output=True,
                                    text=True, cwd=os.getcwd()).stdout)
    finally:
        flood.kill()
        flood.wait()
    assert strays == 0, f"{strays} frames of the other interface were read on the port"
