"""The pure parts of the tools around the cluster: run-time settings, watch, metrics."""

import pytest

from nodes.engine import ACCEPT, INSIDE, OUTSIDE
from nodes.observe.inspect import changes
from nodes.observe.metrics import Family, controller_families, exposition, node_families
from prometheus_client.parser import text_string_to_metric_families
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
def parsed(text: str) -> dict:
    """A scrape as Prometheus's own parser reads it: (sample name, labels) -> (the
    family's type, value); the parser raises on anything the format does not allow."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = (fam.type, sample.value)
    return out


def test_exposition_parses_with_prometheus_parser():
    fams = [Family("x_total", "counter", "Things\ncounted").add(3, node="fw1", why='a"b\\c'),
            Family("empty", "gauge", "never sampled"),
            Family("y", "gauge", "a level").add(0.25, node="fw1").add(True, node="fw2")]
    text = exposition(fams)
    assert "# HELP x_total Things counted" in text and "# TYPE x_total counter" in text
    assert parsed(text) == {
        ("x_total", (("node", "fw1"), ("why", 'a"b\\c'))): ("counter", 3.0),
        ("y", (("node", "fw1"),)): ("gauge", 0.25), ("y", (("node", "fw2"),)): ("gauge", 1.0)}
    with pytest.raises(ValueError, match="labels"):  # one family, one set of label names
        Family("z", "gauge", "mixed").add(1, node="fw1").add(2)
    with pytest.raises(ValueError, match="ends in _total"):
        Family("z", "counter", "a counter without its suffix")


def test_node_families_turn_node_stats_into_metrics():
    net = Net(3, mode="ondemand")
    net.fw[1].process(tcp(flags="S"), OUTSIDE, net.t)
    net.fw[1].process(tcp(dport=23, flags="S"), OUTSIDE, net.t)  # refused by the rules
    net.run()
    stats = {f"fw{i}": {**net.fw[i].stats(net.t), "sync": net.sync[i].stats(net.t)}
             for i in (1, 2)}
    stats["fw1"]["sync"]["bulk_ms_last"] = 12.5  # as after a join
    stats["fw3"] = None  # did not answer
    text = exposition(node_families(stats))
    got = parsed(text)
    assert got["fwcluster_node_up", (("node", "fw3"),)] == ("gauge", 0.0)
    assert got["fwcluster_connections", (("node", "fw1"), ("role", "own"))] == ("gauge", 1.0)
    backup = f"fw{net.sync[1].stats(net.t)['backups'][0]}"
    if backup == "fw2":
        assert got["fwcluster_connections", (("node", "fw2"), ("role", "copy"))][1] == 1
    assert got["fwcluster_drops_total", (("node", "fw1"), ("reason", "policy"))] == \
        ("counter", 1.0)
    assert got["fwcluster_sync_mode", (("mode", "ondemand"), ("node", "fw1"))] == ("gauge", 1.0)
    assert got["fwcluster_sync_total", (("counter", "messages_sent"), ("node", "fw1"))][0] == \
        "counter"
    # a float that can go down is a gauge; percentiles are not a summary's quantiles
    assert got["fwcluster_sync_bulk_last_milliseconds", (("node", "fw1"),)] == ("gauge", 12.5)
    assert all(dict(labels).keys().isdisjoint({"quantile"}) for _, labels in got)
    lag = [k for k in got if k[0] == "fwcluster_sync_lag_milliseconds"]
    assert lag and all(dict(labels)["percentile"] in ("50", "99") for _, labels in lag)


def test_controller_families_count_buckets_and_membership():
    got = parsed(exposition(controller_families(["fw1", "fw2"], ["fw1"], ["fw1"] * 4, 2,
                                                {"node_down": 1, "buckets_moved": 2},
                                                {"fw1": 7})))
    for key, value in ((("fwcluster_controller_node_live", (("node", "fw1"),)), 1),
                       (("fwcluster_controller_node_live", (("node", "fw2"),)), 0),
                       (("fwcluster_controller_buckets", (("node", "fw1"),)), 4),
                       (("fwcluster_controller_heartbeats_total", (("node", "fw2"),)), 0),
                       (("fwcluster_controller_total", (("counter", "node_down"),)), 1),
                       (("fwcluster_controller_switches", ()), 2)):
        assert got[key][1] == value, key


def test_bench_names_pick_benchmarks():
    from experiments.bench import ON_REQUEST, select
    assert "robustness" not in select([]) and set(ON_REQUEST).isdisjoint(select([]))
    assert select(["failover_side"]) == ["failover_side"]  # not failover too
    assert select(["failover"]) == ["failover"]
    assert select(["sync"]) == ["sync_memory", "sync_bulk", "sync_lag", "sync_lag_kernelnode",
                                "sync_hold_during_bulk"]
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


def test_the_outage_of_a_fault_is_the_silence_around_it_however_short():
    # The link-down bench's sixth fault (2026-12-04): the backup carried the stream
    # 6.5 ms after the fault, under the probe's old 10 ms threshold, so no silence was
    # logged after it and the bench waited for one in vain. The outage is the silence
    # that begins at the fault; earlier ones, and later ones (at the return), are not.
    from experiments.bench_failover import outage_of
    t = 1000.0
    before = {"last": t - 0.60, "first": t - 0.58, "gap_ms": 20.0}
    at_return = {"last": t + 0.40, "first": t + 0.41, "gap_ms": 10.0}
    assert outage_of([before, at_return], t) is None
    short = {"last": t - 0.0004, "first": t + 0.0066, "gap_ms": 7.0}
    assert outage_of([at_return, before, short], t) == short
    in_flight = {"last": t + 0.0003, "first": t + 0.09, "gap_ms": 89.7}  # began just after
    assert outage_of([before, in_flight, at_return], t) == in_flight


def test_a_hiccup_before_the_link_goes_down_is_not_the_outage():
    # The link-down bench of 2026-12-04 (second fault): a 4.4 ms silence 0.9 ms after
    # the fault (the 'ip link' command's own CPU), the stream back at 5.3 ms through
    # the same node, then the real outage, until the controller had moved the buckets
    # at 19.9 ms. The first silence was taken for the outage: a failover of 5.3 ms,
    # before the decision that made it.
    from experiments.bench_failover import outage_of
    t = 1000.0
    hiccup = {"last": t + 0.0009, "first": t + 0.0053, "gap_ms": 4.4}
    outage = {"last": t + 0.0071, "first": t + 0.0215, "gap_ms": 14.4}
    assert outage_of([hiccup, outage], t) == outage


def test_an_outage_below_the_probes_resolution_is_reported_at_that_bound(tmp_path):
    import json
    import time
    from experiments import bench_failover as bf
    gaps = tmp_path / "udp-gaps.jsonl"
    gaps.write_text(json.dumps({"last": 1.0, "first": 1.02, "gap_ms": 20.0}) + "\n")
    t_fault = time.time() - 1.0  # the stream moved to the backup and no silence began
    gap = bf.stream_outage(str(gaps), t_fault, moved=lambda: True, timeout=1)
    assert gap["below_resolution"] and gap["gap_ms"] == bf.STREAM_RESOLUTION * 1000
    with pytest.raises(TimeoutError):  # not moved, no silence: the failover did not happen
        bf.stream_outage(str(gaps), time.time(), moved=lambda: False, timeout=0.3)


# -- the scaling bench's pure parts -------------------------------------------
def test_the_fill_gives_every_connection_its_own_key_and_right_checksums():
    from scapy.layers.l2 import Ether
    from experiments.synfill import PORTS, fill_key, syn_frame
    keys = {fill_key(i) for i in (0, 1, PORTS - 1, PORTS, 10 * PORTS + 7)}
    assert len(keys) == 5
    assert fill_key(PORTS) == (bytes([10, 9, 128, 1]), 1024)
    src, sport = fill_key(123457)
    frame = syn_frame(b"\x02\x00\x00\x00\x00\x01", src, sport, bytes([10, 9, 0, 2]), 9, 42)
    parsed = Ether(frame)
    sent_ip, sent_tcp = parsed["IP"].chksum, parsed["TCP"].chksum
    del parsed["IP"].chksum, parsed["TCP"].chksum  # scapy computes them afresh
    again = Ether(bytes(parsed))
    assert (sent_ip, sent_tcp) == (again["IP"].chksum, again["TCP"].chksum)
    assert (parsed["IP"].src, parsed["TCP"].sport, parsed["TCP"].flags) == \
        ("10.9.128.2", 1024 + 123457 % PORTS, "S")


def test_the_scaling_figure_is_drawn_from_the_raw_points_alone(tmp_path):
    import json
    from experiments.bench_scaling import _label, plot
    data = {"full": False,
            "table": [{"entries": 0, "asked": 0, "tcp_gbps": 0.8, "udp64_kpps": 47.0},
                      {"entries": 99000, "asked": 100000, "tcp_gbps": 0.7, "udp64_kpps": 30.0}],
            "bulk": [{"entries": 10000, "seconds": 0.1}],
            "memory": [{"entries": 1000, "table_bytes": 300, "with_key_bytes": 460}],
            "adopt": [{"entries": 100, "heir_ms": 0.3, "rereplicated_s": 0.01}]}
    (tmp_path / "scaling.json").write_text(json.dumps(data))
    drawn = plot(str(tmp_path))
    assert drawn.endswith("scaling.png") and (tmp_path / "figures" / "scaling.png").stat().st_size
    assert [_label(n) for n in (0, 100, 10_000, 1_000_000, 1_500)] == \
        ["0", "100", "10k", "1m", "1500"]
