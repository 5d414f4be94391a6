"""The pure parts of the tools around the cluster: run-time settings, watch, metrics."""
import re

import pytest

from nodes.engine import ACCEPT, INSIDE, OUTSIDE
from nodes.observe.inspect import changes
from nodes.observe.metrics import Family, controller_families, exposition, node_families
from nodes.settings import SyncSettings, runtime_change
from tests.unit.frames import tcp
from tests.unit.cluster_sim import Net


# -- run-time sync settings (the control socket's 'set', the CLI's 'sync') -----
def test_runtime_change_reads_each_setting_and_keeps_the_rest():
    before = SyncSettings(mode="ondemand", interval=1.0)
    after = runtime_change(before, "mode=periodic interval=0.5 hold=off triggers=new_connection")
    assert (after.mode, after.interval, after.hold, after.triggers) == \
        ("periodic", 0.5, False, ("new_connection",))
    assert after.replication == before.replication and before.mode == "ondemand"


@pytest.mark.parametrize("args, message", [
    ("mode=bogus", "mode = 'bogus': must be 'none', 'periodic'"),
    ("hold=maybe", "hold = 'maybe' is not on or off"),
    ("interval=soon", "interval = 'soon' is not a float"),
    ("colour=blue", "cannot set 'colour=blue'"),
    ("mode", "cannot set 'mode'"),
    ("", "nothing to set"),
    ("interval=-1", "interval = -1.0: must be greater than 0"),
    ("mode=home", "mode home is chosen when the cluster starts"),
])
def test_runtime_change_refuses_bad_settings_in_one_line(args, message):
    with pytest.raises(ValueError) as err:
        runtime_change(SyncSettings(), args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_runtime_change_cannot_leave_mode_home():
    with pytest.raises(ValueError, match="chosen when the cluster starts"):
        runtime_change(SyncSettings(mode="home"), "mode=ondemand")
    assert runtime_change(SyncSettings(mode="home"), "interval=2").mode == "home"


# -- watch: what changed between two dumps ---------------------------------------
def test_changes_show_a_session_arriving_on_the_backup_node():
    net = Net(3, mode="ondemand")
    backup = net.sync[1].stats(net.t)["backups"][0]
    before = net.fw[backup].dump(net.t)
    assert net.fw[1].process(tcp(flags="S"), OUTSIDE, net.t) == ACCEPT
    net.run()
    arrived = changes(before, net.fw[backup].dump(net.t))
    assert len(arrived) == 1 and arrived[0].startswith("+ connection  tcp 10.0.0.1:40000 ->")
    assert "SYN_SENT owner=fw1" in arrived[0] and "a copy" in arrived[0]
    mid = net.fw[backup].dump(net.t)
    net.fw[1].process(tcp(src="10.0.0.201", dst="10.0.0.1", sport=21, dport=40000, flags="SA"),
                      INSIDE, net.t)
    net.run()
    moved = changes(mid, net.fw[backup].dump(net.t))
    assert moved and moved[0].startswith("~ connection") and "SYN_RECV" in moved[0]
    assert changes(mid, mid) == []
    gone = changes(mid, {**mid, "entries": []})
    assert gone == [f"- connection  {arrived[0][len('+ connection  '):].split('  [')[0]}"]


# -- Prometheus text format ------------------------------------------------------
def test_exposition_follows_the_text_format():
    fams = [Family("x_total", "counter", "Things\ncounted").add(3, node="fw1", why='a"b\\c'),
            Family("empty", "gauge", "never sampled"),
            Family("y", "gauge", "a level").add(0.25).add(True, node="fw2")]
    text = exposition(fams)
    assert text.splitlines() == [
        "# HELP x_total Things counted", "# TYPE x_total counter",
        'x_total{node="fw1",why="a\\"b\\\\c"} 3',
        "# HELP y a level", "# TYPE y gauge", "y 0.25", 'y{node="fw2"} 1']
    assert text.endswith("\n")


SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$')


def test_node_families_turn_node_stats_into_metrics():
    net = Net(3, mode="ondemand")
    net.fw[1].process(tcp(flags="S"), OUTSIDE, net.t)
    net.fw[1].process(tcp(dport=23, flags="S"), OUTSIDE, net.t)  # refused by the rules
    net.run()
    stats = {f"fw{i}": {**net.fw[i].stats(net.t), "sync": net.sync[i].stats(net.t)}
             for i in (1, 2)}
    stats["fw3"] = None  # did not answer
    text = exposition(node_families(stats))
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    assert all(SAMPLE.match(l) for l in lines), [l for l in lines if not SAMPLE.match(l)]
    assert 'fwcluster_node_up{node="fw3"} 0' in lines
    assert 'fwcluster_connections{node="fw1",role="own"} 1' in lines
    backup = f"fw{net.sync[1].stats(net.t)['backups'][0]}"
    if backup == "fw2":
        assert 'fwcluster_connections{node="fw2",role="copy"} 1' in lines
    assert 'fwcluster_drops_total{node="fw1",reason="policy"} 1' in lines
    assert 'fwcluster_sync_mode{mode="ondemand",node="fw1"} 1' in lines
    assert any(l.startswith('fwcluster_sync_total{counter="messages_sent",node="fw1"}')
               for l in lines)
    for name in {l.split("{")[0] for l in lines}:  # every family has HELP and TYPE
        assert f"# TYPE {name} " in text and f"# HELP {name} " in text


def test_controller_families_count_buckets_and_membership():
    text = exposition(controller_families(["fw1", "fw2"], ["fw1"], ["fw1"] * 4, 2,
                                          {"node_down": 1, "buckets_moved": 2}, {"fw1": 7}))
    for line in ('fwcluster_controller_node_live{node="fw1"} 1',
                 'fwcluster_controller_node_live{node="fw2"} 0',
                 'fwcluster_controller_buckets{node="fw1"} 4',
                 'fwcluster_controller_heartbeats_total{node="fw2"} 0',
                 'fwcluster_controller_total{counter="node_down"} 1',
                 "fwcluster_controller_switches 2"):
        assert line in text.splitlines()


def test_bench_names_pick_benchmarks():
    from experiments.bench import ON_REQUEST, select
    assert "robustness" not in select([]) and set(ON_REQUEST).isdisjoint(select([]))
    assert select(["failover_side"]) == ["failover_side"]  # not failover too
    assert select(["failover"]) == ["failover"]
    assert select(["sync"]) == ["sync_memory", "sync_bulk", "sync_lag", "sync_lag_kernelnode"]
    assert select(["dataplane_tcp"]) == ["dataplane"]


def test_progress_says_the_time_left_not_the_time_elapsed():
    """It printed "18s elapsed, about 18s left" on the last of two points."""
    from experiments.run import Progress
    now = [0.0]
    progress = Progress("demo", 2, clock=lambda: now[0])
    assert progress.left(0.0) is None
    now[0] = 18.0
    progress.finished()  # the first point took 18 s
    assert progress.left(18.0) == 18.0  # one more like it
    assert progress.left(30.0) == 6.0  # 12 s into the last one
    assert progress.left(40.0) == 0.0
    now[0] = 36.0
    progress.finished()
    assert progress.left(36.0) == 0.0
