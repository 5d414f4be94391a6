"""Attribution of sessions to nodes, and figures from raw data alone."""
import csv

import pytest

from experiments.plot import plot_run, wilson
from experiments.run import SESSION_FIELDS, write_csv
from experiments.analysis.attribution import attribute
from experiments.workload import plan_sessions
from nodes.packet import ip_bytes, key_fields, key_str, make_key


def _key(src, sport, dst, dport):
    return make_key(6, ip_bytes(src), sport, ip_bytes(dst), dport)


def new(t, node, src, sport, dst, dport):
    """A ``new`` event as the gateway engine logs it."""
    key = _key(src, sport, dst, dport)
    return {"t": t, "node": node, "event": "new",
            "entry": {"orig": key_str(key), "tuple": key_fields(key)}}


def drop(t, node, src, sport, dst, dport):
    """A ``drop`` event as the gateway engine logs it."""
    key = _key(src, sport, dst, dport)
    return {"t": t, "node": node, "event": "drop", "reason": "policy", "key": key_str(key),
            "tuple": key_fields(key)}


def session(sid, cport, announced, ok):
    return {"session": sid, "mode": "PASV", "outcome": "ok" if ok else "fail",
            "control": ["10.0.0.1", cport, "10.0.0.201", 21], "announced": announced,
            "t_start": 100.0, "t_end": 101.0}


def test_attribute_finds_control_and_data_nodes_from_node_events():
    events = [new(100.1, "fw1", "10.0.0.1", 40000, "10.0.0.201", 21),
              new(100.2, "fw1", "10.0.0.1", 40001, "10.0.0.201", 50000),
              new(100.1, "fw2", "10.0.0.1", 40002, "10.0.0.201", 21),
              drop(100.2, "fw3", "10.0.0.1", 40003, "10.0.0.201", 50001),
              drop(300.0, "fw1", "10.0.0.1", 40009, "10.0.0.201", 50001)]  # another time
    out = attribute([session(0, 40000, ["10.0.0.201", 50000], True),
                     session(1, 40002, ["10.0.0.201", 50001], False),
                     session(2, 40004, None, False)], events)
    assert [(r["control_node"], r["data_node"], r["data_verdict"], r["same_node"]) for r in out] == [
        ("fw1", "fw1", "accepted", True), ("fw2", "fw3", "refused", False), (None, None, None, None)]


def test_plan_is_seeded_and_cycles_modes():
    files = {"a": "1", "b": "2"}
    p1 = plan_sessions(8, 2, 2, ["PASV", "PORT"], files, 5)
    assert p1 == plan_sessions(8, 2, 2, ["PASV", "PORT"], files, 5)
    items = sorted((i for c in p1.values() for i in c), key=lambda i: i["session"])
    assert [i["mode"] for i in items] == ["PASV", "PORT"] * 4


def test_wilson_interval():
    lo, hi = wilson(8, 24)
    assert 0.17 < lo < 0.19 and 0.53 < hi < 0.55
    assert wilson(0, 0) == (0.0, 0.0)


def test_figures_come_from_sessions_csv_alone(tmp_path):
    rows = []
    for n in (1, 3):
        for sid in range(6):
            same = n == 1 or sid % 3 == 0
            rows.append({"point": f"nodes{n}", "nodes": n, "repetition": 0, "session": sid,
                         "mode": "PASV", "outcome": "ok" if same else "fail",
                         "control_node": f"fw{sid % n + 1}", "same_node": same})
    write_csv(rows, str(tmp_path / "sessions.csv"))
    with open(tmp_path / "sessions.csv") as fh:
        assert next(csv.reader(fh)) == SESSION_FIELDS
    paths = plot_run(str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
        "sessions_per_node.pdf", "sessions_per_node.png",
        "success_vs_cluster_size.pdf", "success_vs_cluster_size.png"]
    assert all((tmp_path / "figures" / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in paths)


def test_mice_and_elephants_sizes():
    from experiments.files import ELEPHANT_FACTOR, file_sizes
    sizes = file_sizes(20, 4096, "mice_elephants")
    assert sizes.count(4096) == 18 and sizes.count(4096 * ELEPHANT_FACTOR) == 2
    assert file_sizes(3, 10, "mice_elephants")[-1] == 10 * ELEPHANT_FACTOR  # at least one
    assert file_sizes(3, 10, "fixed") == [10, 10, 10]
    with pytest.raises(ValueError, match="unknown"):
        file_sizes(1, 10, "normal")


def test_make_files_writes_the_sizes_and_sums(tmp_path):
    import hashlib
    from experiments.files import file_sizes, make_files
    sums = make_files(str(tmp_path), 5, 300, 9, "mice_elephants")
    for (name, digest), size in zip(sorted(sums.items()), file_sizes(5, 300, "mice_elephants")):
        data = (tmp_path / name).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == digest


def _point(run, name, variant, sync, sessions, node_events, events=()):
    import json
    d = run / "points" / name
    d.mkdir(parents=True)
    (d / "point.json").write_text(json.dumps({"name": name, "variant": variant, "params": {}}))
    (d / "spec.resolved.json").write_text(json.dumps({
        "topology": {"nodes": 3}, "cluster": {"sync": sync},
        "traffic": {"sessions": len(sessions)}}))
    for fname, rows in (("sessions.jsonl", sessions), ("fw.events.jsonl", node_events),
                        ("events.jsonl", events)):
        (d / fname).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_demo_story_is_told_from_raw_data(tmp_path):
    """SUMMARY.md and summary.png of a demo run: counts by outcome per run, and the
    sessions the crash hit that finished through the backup."""
    refused = [session(0, 40000, ["10.0.0.201", 50000], True),
               session(1, 40002, ["10.0.0.201", 50001], False)]
    _point(tmp_path, "1_no_sync-r0", "1_no_sync", "none", refused,
           [new(100.1, "fw1", "10.0.0.1", 40000, "10.0.0.201", 21),
            new(100.2, "fw1", "10.0.0.1", 40001, "10.0.0.201", 50000),
            new(100.1, "fw2", "10.0.0.1", 40002, "10.0.0.201", 21),
            drop(100.2, "fw3", "10.0.0.1", 40003, "10.0.0.201", 50001)])
    hit = dict(session(0, 40000, ["10.0.0.201", 50000], True), t_first_byte=100.3,
               max_gap=0.25, bins={"1004": 100000, "1006": 100000})
    _point(tmp_path, "3_crash-r0", "3_crash", "ondemand", [hit],
           [new(100.1, "fw1", "10.0.0.1", 40000, "10.0.0.201", 21),
            new(100.2, "fw1", "10.0.0.1", 40001, "10.0.0.201", 50000)],
           [{"t": 100.5, "event": "fault_crash", "node": "fw1"}])
    paths = plot_run_story(tmp_path)
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == ["SUMMARY.md", "summary.pdf",
                                                          "summary.png"]
    text = (tmp_path / "SUMMARY.md").read_text()
    assert "1 of 2 (50%) FTP sessions succeeded; in 1 of 2 (50%) the data connection" in text
    assert "1 sessions had a connection on it" in text and "1 of 1 finished" in text
    assert "250 ms" in text


def plot_run_story(run):
    import json
    (run / "spec.resolved.json").write_text(json.dumps({"analysis": "story"}))
    write_csv([], str(run / "sessions.csv"))
    return plot_run(str(run))
