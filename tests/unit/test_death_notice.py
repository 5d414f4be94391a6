"""A node's death notice (nodes/shell/deathwatch.py): sealed by the node, sent by its host.

The pure side: the DEATH message, the one rule in nodes/failure.py, what nodes
and controller do with it. The watcher process itself is run here too (it
needs no root: a pipe and a UDP socket on the loopback)."""
import json
import os
import socket
import subprocess
import sys

from controller.membership import DOWN, ClusterMembership
from nodes import syncproto as sp
from nodes.failure import DEAD, STALE, UNHEARD, FailureDetector
from tests.unit.cluster_sim import KEY, Net
from tests.unit.test_membership import KEY as CONTROLLER_KEY, NAMES, SETTINGS, beat
from tests.unit.test_sync import fill, owned

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_notice_is_an_authenticated_empty_message_for_every_receiver():
    data = sp.death_notice(2, 12345, KEY)
    msg = sp.decode(data, KEY)
    assert (msg.type, msg.sender, msg.receiver, msg.boot, msg.seq) == (sp.DEATH, 2, 0, 12345, 0)
    forged = data[:-1] + bytes([data[-1] ^ 1])
    try:
        sp.decode(forged, KEY)
        raise AssertionError("a forged notice was accepted")
    except sp.Reject as err:
        assert err.reason == "bad_mac"


def test_the_detector_ends_only_the_incarnation_it_knows():
    d = FailureDetector([1, 2], 0.1, 1.0, 0.0)
    d.heard(2, 7, 1, [1, 2], 0.0)
    assert d.died(2, 6) == STALE  # another incarnation
    assert d.died(2, 7) == DEAD
    assert d.died(2, 7) == STALE  # a replay: already over
    assert d.heard(2, 7, 2, [1, 2], 0.01) == STALE  # its heartbeats still in flight count not
    assert d.heard(2, 8, 1, [1, 2], 0.02) != STALE  # its restart does
    assert d.past[2] == [7]


def test_a_member_that_dies_while_starting_loses_its_start_up_grace():
    # CI (2026-12-04): fw1 was crashed as soon as the cluster was up; fw2 had only
    # had hellos from it, refused its notice, and gave it the 5 s start-up grace
    d = FailureDetector([1, 2], 0.1, 5.0, 0.0)
    assert d.died(2, 7) == UNHEARD
    assert d.judge([2], 0.05, 0.0) == []  # silent only since the start: not yet
    assert [m for m, _ in d.judge([2], 0.2, 0.0)] == [2]  # not 5 s: dead_after
    assert d.heard(2, 7, 1, [1, 2], 0.21) == STALE  # that incarnation is over


def test_a_node_judges_a_peer_that_died_starting_on_its_silence_at_once():
    net = Net(3, startup_grace=5.0)
    s = net.sync[2]
    fresh = FailureDetector([1, 3], 0.1, 5.0, net.t)  # as if fw2 had heard nobody yet
    s.detector, s.channels[1].peer_boot = fresh, 0
    fresh.heard(3, net.sync[3].boot, 10**6, [1, 2, 3], net.t)
    s.receive(sp.death_notice(1, 555, KEY), net.t)
    assert 1 in s.alive and s.counters["death_notices_received"] == 1
    net.down.add(1)
    net.run(0.3)
    assert 1 not in s.alive


def test_a_peer_whose_death_is_announced_is_failed_over_at_once_not_after_silence():
    net = Net(3)
    fill(net)
    before = owned(net, 1)
    net.down.add(1)  # crashed: from here it sends nothing
    t0 = net.t
    for i in (2, 3):
        net.sync[i].receive(sp.death_notice(1, net.sync[1].boot, KEY), t0)
    assert net.sync[2].alive == net.sync[3].alive == {2, 3}  # before any tick, at t0
    down = [f for _, kind, f in net.sync[2].events if kind == "peer_down"]
    assert down == [{"peer": "fw1", "why": "node_failed", "announced": True}]
    net.run(0.01)
    assert before <= owned(net, 2)
    assert net.sync[2].counters["death_notices_received"] == 1


def test_a_notice_replayed_or_for_another_incarnation_changes_nothing():
    net = Net(3)
    s = net.sync[2]
    s.receive(sp.death_notice(1, 999, KEY), net.t)  # not fw1's incarnation
    assert s.alive == {1, 2, 3} and s.rejected["death_not_current"] == 1
    notice = sp.death_notice(1, net.sync[1].boot, KEY)
    net.sync[1].boot = 4242  # fw1 restarted meanwhile; the old notice is replayed
    net.run(0.2)
    assert s.alive == {1, 2, 3}
    s.receive(notice, net.t)
    assert s.alive == {1, 2, 3} and s.rejected["death_not_current"] == 2


def test_nothing_from_the_dead_incarnation_brings_it_back():
    net = Net(3)
    fill(net)
    net.run(0.05)
    net.sync[1].tick(net.t + 0.03)  # a round of its messages, to be read late
    late = [data for peer, data in net.sync[1].outbox if peer == 2]
    assert late, "fw1 sent fw2 nothing to replay"
    net.sync[1].outbox.clear()
    net.down.add(1)
    s = net.sync[2]
    s.receive(sp.death_notice(1, net.sync[1].boot, KEY), net.t)
    for data in late:  # in flight when it died: read after the notice
        s.receive(data, net.t + 0.001)
    assert 1 not in s.alive and s.rejected["old_boot"] == len(late)


def test_the_controller_takes_an_announced_node_down_at_once_and_never_back_as_kept():
    m = ClusterMembership(NAMES, CONTROLLER_KEY, SETTINGS, 0.0)
    live = ["fw1", "fw2", "fw3"]
    for node in (1, 2, 3):
        m.arrived(beat(node, boot=100 + node), 0.0, live)
    assert m.arrived(sp.death_notice(2, 102, CONTROLLER_KEY), 0.01, live) == [
        (DOWN, "fw2", {"why": "announced"})]
    assert m.arrived(sp.death_notice(2, 102, CONTROLLER_KEY), 0.02, ["fw1", "fw3"]) == []
    assert m.arrived(sp.death_notice(3, 999, CONTROLLER_KEY), 0.02, ["fw1", "fw3"]) == []
    assert m.rejected["death_not_current"] == 2
    assert m.arrived(beat(2, boot=102), 0.03, ["fw1", "fw3"]) == []  # a late heartbeat of it
    back = m.arrived(beat(2, boot=777), 0.04, ["fw1", "fw3"])
    assert back[0][2] == {"boot": 777, "kept_state": False}


def _watcher(tmp_path, mode="crash"):
    """A watcher started as the node starts it, sending to a socket of the test's."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    events = tmp_path / "fw1.events.jsonl"
    code = ("import sys, time\n"
            "from nodes.shell.deathwatch import DeathWatch\n"
            f"w = DeathWatch('fw1', b'notice', '127.0.0.1', [('127.0.0.1', {rx.getsockname()[1]})],"
            f" 0.0, {str(events)!r})\n"
            "print(w.proc.pid, flush=True)\n"
            "if sys.argv[1] == 'leave':\n"
            "    w.disarm()\n"
            "else:\n"
            "    time.sleep(60)\n")
    node = subprocess.Popen([sys.executable, "-c", code, mode], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    return rx, events, node


def test_the_watcher_sends_the_notice_when_the_node_is_killed(tmp_path):
    rx, events, node = _watcher(tmp_path)
    watcher_pid = int(node.stdout.readline())
    node.kill()  # SIGKILL: the node cannot say anything itself
    node.wait()
    data, _ = rx.recvfrom(100)
    assert data == b"notice"
    deadline_wait(watcher_pid)
    logged = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    assert [e["event"] for e in logged] == ["death_notice_sent"] and logged[0]["to"] == 1


def test_the_watcher_is_silent_after_a_graceful_leave(tmp_path):
    rx, events, node = _watcher(tmp_path, "leave")  # killed instead, it sends: above
    watcher_pid = int(node.stdout.readline())
    assert node.wait(timeout=10) == 0
    deadline_wait(watcher_pid)  # it has exited: whatever it would send is sent
    rx.settimeout(0.2)
    try:
        data = rx.recvfrom(100)
        raise AssertionError(f"a notice after a graceful leave: {data}")
    except socket.timeout:
        pass
    assert not events.exists()


def deadline_wait(pid, seconds=10.0):
    """Wait until process ``pid`` is gone (it is not our child: poll /proc)."""
    import time
    end = time.monotonic() + seconds
    while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
        assert time.monotonic() < end, f"process {pid} still running"
        time.sleep(0.01)


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
