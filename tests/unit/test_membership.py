"""One failure detector for nodes and controller: the same rules, from every heartbeat."""
from controller.membership import DOWN, UP, ClusterMembership
from nodes import syncproto as sp
from nodes.conntrack import ConnectionTable
from nodes.failure import ALIVE, LEAVE, RESTART, STALE, FailureDetector
from nodes.settings import SyncSettings
from nodes.sync import SyncEngine

KEY = b"k" * 32
NAMES = {1: "fw1", 2: "fw2", 3: "fw3"}
SETTINGS = SyncSettings(heartbeat=0.02, dead_after=0.1, startup_grace=1.0)


COUNTER = iter(range(1, 1_000_000))


def beat(sender, boot=100, members=(1, 2, 3), ready=True, receiver=0, to_boot=0, seq=None):
    """A heartbeat as a node sends it: each with a higher freshness counter."""
    return sp.encode(sp.Message(sp.HEARTBEAT, sender, receiver, boot,
                                next(COUNTER) if seq is None else seq, members=list(members),
                                ready=ready, to_boot=to_boot), KEY)


def test_detector_verdicts():
    d = FailureDetector([1, 2], dead_after=0.1, startup_grace=1.0, now=0.0)
    assert d.heard(1, 100, 1, [1, 2], 0.01) == ALIVE
    assert d.heard(1, 100, 1, [1, 2], 0.015) == STALE  # the same counter again: a replay
    assert d.heard(1, 7, 2, [1, 2], 0.02) == RESTART  # a new incarnation, whatever its number
    assert d.heard(1, 100, 9, [1, 2], 0.025) == STALE  # the old one is over
    assert d.heard(1, 7, 3, [], 0.04) == LEAVE  # its own view leaves it out: goodbye
    assert [m for m, _ in d.silent([1, 2], 0.5)] == [1]  # 2 never heard: within its grace
    assert [m for m, _ in d.silent([1, 2], 1.01)] == [1, 2]


def test_controller_judges_only_after_every_queued_heartbeat_is_read():
    """Issue 14: a controller that fell behind read one heartbeat, judged, and took the
    others (still queued) for dead. Reading all, then judging, keeps every node."""
    m = ClusterMembership(NAMES, KEY, SETTINGS, 0.0)
    live = ["fw1", "fw2", "fw3"]
    first = [beat(node) for node in (1, 2, 3)]
    for data in first:
        m.arrived(data, 0.0, live)
    queued = [beat(node) for node in (1, 2, 3)]  # sent at 0.02 s, read 0.3 s late
    for data in queued:
        assert m.arrived(data, 0.32, live) == []
    m.last_judged = 0.31  # it judged just before (a controller judges every few ms)
    assert m.judge(0.32, live) == []
    # Had it judged after the first datagram only, two nodes would have been down:
    m2 = ClusterMembership(NAMES, KEY, SETTINGS, 0.0)
    for data in first:
        m2.arrived(data, 0.0, live)
    m2.arrived(queued[0], 0.32, live)
    m2.last_judged = 0.31
    assert [a[1] for a in m2.judge(0.32, live)] == ["fw2", "fw3"]


def test_a_controller_that_was_away_judges_after_one_more_read():
    """The controller itself off the CPU for 110 ms (10 ms heartbeats, 40 ms dead time,
    a loaded machine) judged on its return, before the heartbeats sent meanwhile had
    come in, and took a live node for dead (make bench failover). Like a node, it puts
    off a judgement right after its own pause, once."""
    settings = SyncSettings(heartbeat=0.01, dead_after=0.04, startup_grace=1.0)
    m = ClusterMembership(NAMES, KEY, settings, 0.0)
    live = ["fw1", "fw2", "fw3"]
    for node in (1, 2, 3):
        m.arrived(beat(node), 0.0, live)
    for step in range(1, 4):
        assert m.judge(step / 100, live) == []
    # away from 0.03 to 0.14; fw1 died meanwhile, fw2's heartbeats are on their way
    assert m.judge(0.14, live) == [] and m.judgements_deferred == 1
    m.arrived(beat(2), 0.145, live)
    m.arrived(beat(3), 0.145, live)
    assert m.judge(0.145, live) == [(DOWN, "fw1", {"why": "silent", "silent_ms": 145.0})]
    # a controller always that slow still judges, every other round
    rest = ["fw2", "fw3"]
    assert m.judge(0.3, rest) == [] and [a[1] for a in m.judge(0.46, rest)] == rest


def test_the_controller_says_whether_a_node_back_is_the_incarnation_it_took_for_dead():
    m = ClusterMembership(NAMES, KEY, SETTINGS, 0.0)
    live = ["fw1", "fw2", "fw3"]
    for node in (1, 2, 3):
        m.arrived(beat(node, boot=100 + node), 0.0, live)
    m.last_judged = 0.2
    assert [a[1] for a in m.judge(0.2, live)] == ["fw1", "fw2", "fw3"]
    assert m.arrived(beat(2, boot=102), 0.21, ["fw3"]) == [
        (UP, "fw2", {"boot": 102, "kept_state": True})]  # taken for dead: the same
    assert m.arrived(beat(1, boot=900), 0.21, ["fw2", "fw3"]) == [
        (UP, "fw1", {"boot": 900, "kept_state": False})]  # restarted


def test_controller_and_nodes_use_the_same_leave_rule_and_grace():
    m = ClusterMembership(NAMES, KEY, SETTINGS, 0.0)
    node = SyncEngine(1, [1, 2, 3], ConnectionTable(), KEY, SETTINGS, NAMES, boot=1, now=0.0)
    # fw2 leaves: its heartbeat's view leaves it out (here: lists only fw1 and fw3)
    goodbye = beat(2, members=(1, 3), receiver=0)
    assert m.arrived(goodbye, 0.1, ["fw1", "fw2", "fw3"]) == [(DOWN, "fw2", {"why": "left"})]
    node.receive(beat(2, members=(1, 3), receiver=1, to_boot=1), 0.1)
    assert 2 not in node.alive and node.counters["peers_left"] == 1
    # fw3 never heard: neither side judges it before the start-up grace, both after
    for step in range(0, 91, 2):  # both judge every few ms (a pause would defer them)
        node.tick(step / 100)
        assert [a[1] for a in m.judge(step / 100, ["fw3"])] == []
    assert 3 in node.alive
    m.judge(1.04, ["fw3"])
    assert [a[1] for a in m.judge(1.05, ["fw3"])] == ["fw3"]
    for step in range(92, 106, 2):
        node.tick(step / 100)
    assert 3 not in node.alive


def test_controller_ignores_stale_and_foreign_datagrams_and_brings_ready_nodes_back():
    m = ClusterMembership(NAMES, KEY, SETTINGS, 0.0)
    up = [(UP, "fw1", {"boot": 200, "kept_state": False})]
    assert m.arrived(beat(1, boot=200), 0.0, ["fw2", "fw3"]) == up
    old = beat(1, boot=200)
    assert m.arrived(beat(1, boot=199), 0.01, ["fw2", "fw3"]) == [
        (UP, "fw1", {"boot": 199, "kept_state": False})]
    assert m.arrived(old, 0.015, ["fw2", "fw3"]) == []  # 200 is over: a replay of it
    assert m.rejected["stale"] == 1
    assert m.arrived(beat(1, boot=201, ready=False), 0.02, ["fw2", "fw3"]) == []  # not ready
    assert m.arrived(b"junk", 0.03, []) == [] and m.rejected["short"] == 1
    assert m.arrived(beat(1, receiver=2), 0.04, []) == []  # a node's, not the controller's
