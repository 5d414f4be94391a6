"""The reproduction report from synthetic raw data: statistics, verdicts, figures."""
import json
import os

import pytest

from experiments import analysis
from nodes.packet import ip_bytes, key_fields, key_str, make_key


def test_mean_ci_uses_students_t():
    mean, half = analysis.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0 and half == pytest.approx(2.776 * 1.5811 / 5 ** 0.5, rel=1e-3)
    assert analysis.mean_ci([0.5]) == (0.5, None)
    assert analysis.mean_ci([]) == (None, None)
    assert analysis.t975(100) == 1.96 and analysis.t975(11) == 2.228


def test_predicted_share_is_one_plus_k_over_n():
    assert analysis.predicted_share({"cluster": {"replication": "backup", "k": 1}}, 3) == 2 / 3
    assert analysis.predicted_share({"cluster": {"replication": "backup", "k": 2}}, 2) == 1.0
    assert analysis.predicted_share({"cluster": {"replication": "full"}}, 8) == 1.0


def _point(exp_dir, name, variant, rep, outcomes, refused=(), hold_ms=()):
    d = os.path.join(exp_dir, "points", name)
    os.makedirs(d)
    t0 = 1000.0 + rep * 100
    records = []
    for i, ok in enumerate(outcomes):
        records.append({"session": i, "mode": "PASV", "outcome": "ok" if ok else "fail",
                        "control": ["10.0.0.1", 40000 + i, "10.0.0.201", 21],
                        "announced": ["10.0.0.201", 50000 + i], "t_start": t0 + i,
                        "t_end": t0 + i + 0.5})
    with open(os.path.join(d, "sessions.jsonl"), "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    with open(os.path.join(d, "fw2.events.jsonl"), "w") as fh:
        for i in refused:
            key = make_key(6, ip_bytes("10.0.0.1"), 30 + i, ip_bytes("10.0.0.201"), 50000 + i)
            fh.write(json.dumps({"t": t0 + i + 0.1, "node": "fw2", "event": "drop",
                                 "reason": "policy", "key": key_str(key),
                                 "tuple": key_fields(key)}) + "\n")
    spec = {"traffic": {"sessions": len(outcomes)}, "cluster": {"sync": "ondemand"},
            "topology": {"nodes": 3}}
    files = {"spec.resolved.json": spec, "stats.json": {}, "raw.json": {"fw1": {"hold_ms": list(hold_ms)}},
             "point.json": {"point": name, "variant": variant, "params": {}, "repetition": rep,
                            "seed": rep, "t_traffic_start": t0, "t_traffic_end": t0 + 10,
                            "sessions": len(outcomes), "ok": sum(outcomes),
                            "fidelity": {"idle_cpu": 0.5, "emulator_bottleneck": False,
                                         "flags": []}}}
    for fname, data in files.items():
        with open(os.path.join(d, fname), "w") as fh:
            json.dump(data, fh)


def _campaign(tmp_path, reps, nohold_fails):
    folder = tmp_path / "reproduce"
    exp = folder / "e2_hold"
    os.makedirs(folder / "manifests")
    (folder / "manifests" / "shard-1-of-1.json").write_text(json.dumps({"commit": "abc", "shard": "1/1"}))
    os.makedirs(exp)
    (exp / "spec.resolved.json").write_text(json.dumps(
        {"name": "e2_hold", "analysis": "hold", "claim": "Holding helps.", "seed": 21,
         "repetitions": reps}))
    for rep in range(reps):
        _point(str(exp), f"hold-r{rep}", "hold", rep, [True] * 4, hold_ms=[0.4, 0.5, 2.0])
        fails = [i < nohold_fails for i in range(4)]
        _point(str(exp), f"nohold-r{rep}", "nohold", rep, [not f for f in fails],
               refused=[i for i in range(4) if fails[i]])
    return str(folder)


def test_report_from_raw_data_alone_judges_the_claim(tmp_path):
    path, figures = analysis.report(_campaign(tmp_path, 5, nohold_fails=2))
    text = open(path).read()
    assert "**Verdict: holds.**" in text and "Holding helps." in text
    assert "| hold | 5 | 0 ± 0 | 0 ± 0 | 15 |" in text  # 15 held packets over 5 repetitions
    assert "| nohold | 5 | 0.5 ± 0 | 0.5 ± 0 | 0 |" in text
    assert all(os.path.getsize(f) > 1000 for f in figures)
    assert {os.path.splitext(f)[1] for f in figures} == {".png", ".pdf"}


def test_no_lost_race_without_the_hold_is_not_shown_and_few_reps_only_indicative(tmp_path):
    path, _ = analysis.report(_campaign(tmp_path, 2, nohold_fails=0))
    text = open(path).read()
    assert ("**Verdict: not shown (indicative only).** stability: not computed (2 "
            "repetition(s), 3 needed)") in text
    assert "nothing to prevent" in text


def _sync(owned, backups, backup_of=None):
    return {"sync": {"entries_owned": owned, "backup_nodes": backups,
                     "backup_of": backup_of or {}}}


def test_coverage_counts_copies_on_live_backups_only():
    snap = {"nodes": {"fw1": _sync(4, ["fw2"], {"fw3": 3}), "fw2": _sync(2, ["fw3"], {"fw1": 4}),
                      "fw3": _sync(3, ["fw1"], {"fw2": 1})}}
    share, bare = analysis.coverage(snap)
    assert share == pytest.approx((4 + 1 + 3) / 9) and bare == []
    snap["nodes"]["fw2"] = None  # fw2 crashed: fw1's copies there are gone with it
    share, bare = analysis.coverage(snap)
    assert bare == ["fw1"] and share == pytest.approx(3 / 7)


def test_delayed_replication_savings_are_paired_by_repetition(tmp_path):
    def stats(data, acks, entries, carried, unprotected):
        return {"fw1": {"sync": {"counters": {"data_bytes_sent": data, "ack_bytes_sent": acks,
                                              "sent_entry": entries},
                                 "bytes_carried": carried, "unprotected_bytes": unprotected}}}
    points = []
    for rep, scale in ((0, 1.0), (1, 2.0)):  # repetition 1 has twice the traffic
        for delay, (data, entries, unprot) in ((0.0, (800, 100, 1)), (0.1, (300, 20, 30))):
            points.append({"variant": "", "params": {"cluster.delay": delay}, "repetition": rep,
                           "spec": {"cluster": {"delay": delay}}, "t_traffic_start": 0,
                           "t_traffic_end": 1,
                           "stats": stats(data * scale, 200 * scale, entries * scale,
                                          1000 * scale, unprot * scale)})
    result = analysis.delayed(points, str(tmp_path))
    header, rows = result["table"]
    assert rows[1][:2] == ["0.1", 2] and rows[1][3] == "0.5 ± 0"  # 1 - 500/1000 in both
    assert rows[1][4] == "0.8 ± 0" and rows[1][6] == "0.03 ± 0"
    assert result["verdict"] == "holds"  # half saved for 3% unprotected


def test_home_is_judged_against_every_sync_variant_kernel_nodes_too(tmp_path):
    def point(variant, rep, survive, setup, kind, sent):
        records = [{"session": i, "outcome": "ok" if survive else "fail", "bytes": 1000,
                    "data_setup": setup, "t_first_byte": 1.0, "t_end": 3.0,
                    "control_node": "fw1", "data_node": "fw1"} for i in range(2)]
        sync = ({"counters": {"bytes_sent": sent, "messages_sent": 1}} if kind == "kernel" else
                {"counters": {"data_bytes_sent": sent, "messages_sent": 1}})
        stats = {"fw1": {"kind": kind, "sync": sync}}
        if variant == "home":
            stats["fw1"]["home"] = {"counters": {"cluster_bytes_sent": 1500,
                                                 "cluster_messages_sent": 10}}
        return {"variant": variant, "params": {}, "repetition": rep, "records": records,
                "spec": {"cluster": {"latency_ms": 0.0}}, "stats": stats,
                "events": [{"event": "fault_crash", "t": 2.0, "node": "fw1"}]}
    points = [point("home", r, False, 0.012, "python", 0) for r in range(3)]
    points += [point("kernel_sync", r, True, 0.010, "kernel", 40) for r in range(3)]
    result = analysis.home_vs_sync(points, str(tmp_path / "e6k_home_vs_sync_kernel"))
    assert result["verdict"] == "holds", result["why"]
    assert "vs kernel_sync" in result["why"]
    assert os.path.basename(result["figures"][0]).startswith("e6k_home_vs_sync_kernel")
    # a kernel cluster that lost its flows too: the claim fails on it, and says where
    points[3:] = [point("kernel_sync", r, False, 0.010, "kernel", 40) for r in range(3)]
    result = analysis.home_vs_sync(points, str(tmp_path / "e6k_home_vs_sync_kernel"))
    assert result["verdict"] == "does not hold" and "survival (kernel_sync)" in result["why"]


def test_a_median_difference_gets_a_bootstrap_interval_over_repetitions_and_sessions():
    from experiments.analysis.stats import bootstrap_difference
    slow = [[20.0, 21.0, 22.0, 19.0], [20.5, 21.5, 19.5, 22.5], [21.0, 20.0, 22.0, 19.0]]
    fast = [[10.0, 11.0, 12.0, 9.0], [10.5, 11.5, 9.5, 12.5], [11.0, 10.0, 12.0, 9.0]]
    est, low, high = bootstrap_difference(slow, fast, seed=1)
    assert est == pytest.approx(10.0, abs=0.6) and 8 < low <= est <= high < 12
    est, low, high = bootstrap_difference(fast, fast, seed=1)
    assert est == 0 and low < 0 < high
    assert bootstrap_difference(slow, fast, seed=1) == bootstrap_difference(slow, fast, seed=1)
    assert bootstrap_difference([[]], [[1.0]]) is None


def _e8_point(variant, sync, interval, rep, refused, lost, periodic_records):
    """One synthetic point of experiment 8: 12 sessions, 4 of them hit by the crash at 2 s."""
    records = []
    for i in range(12):
        hit = i < 4
        ok = not (hit and i < round(lost * 4))
        records.append({"session": i, "outcome": "ok" if ok else "fail",
                        "data_refusals": int(i >= 12 - round(refused * 12)),
                        "t_first_byte": 1.0, "t_end": 3.0 if hit else 1.5,
                        "control_node": "fw1" if hit else "fw2", "data_node": "fw2"})
    counters = {"records_queued": 100, "records_queued_periodic": periodic_records,
                "data_bytes_sent": 5000, "ack_bytes_sent": 500}
    return {"variant": variant, "params": {"cluster.interval": interval} if interval else {},
            "repetition": rep, "records": records, "t_traffic_start": 0.0,
            "t_traffic_end": 4.0, "stats": {"fw2": {"sync": {"counters": counters}}},
            "spec": {"cluster": {"sync": sync, "interval": interval or 1.0},
                     "traffic": {"sessions": 12}},
            "events": [{"event": "fault_crash", "t": 2.0, "node": "fw1"}]}


def e8_points(combined_lost=0.0, periodic_lost=(0.0, 0.5, 1.0), shares=(30, 10, 0)):
    points = [_e8_point("ondemand", "ondemand", None, r, 0, 0, 0) for r in range(3)]
    for interval, lost, share in zip((0.2, 1.0, 5.0), periodic_lost, shares):
        points += [_e8_point("periodic", "periodic", interval, r, lost, lost, 100)
                   for r in range(3)]
        per_rep = combined_lost if isinstance(combined_lost, tuple) else (combined_lost,) * 3
        points += [_e8_point("combined", "combined", interval, r, 0, per_rep[r], share + r)
                   for r in range(3)]
    return points


def test_experiment_8_judges_combined_against_on_demand_and_periodic(tmp_path):
    exp = str(tmp_path / "e8_combined_interval")
    result = analysis.combined_interval(e8_points(), exp)
    assert result["verdict"] == "holds", result["why"]
    assert os.path.basename(result["figures"][0]).startswith("e8_combined_interval")
    # combined losing what the crash hits, as periodic does: the claim fails, and says why
    result = analysis.combined_interval(e8_points(combined_lost=1.0), exp, draw=False)
    assert result["verdict"] == "does not hold"
    assert "combined keeps on-demand's reliability at every interval: does not hold" \
        in result["why"]
    # a combined loss that comes and goes between repetitions: not shown, not a verdict
    result = analysis.combined_interval(e8_points(combined_lost=(0.0, 0.0, 0.5)), exp,
                                        draw=False)
    assert result["verdict"] == "holds (in part)", result["why"]
    assert "every interval: not shown" in result["why"]


def _e9_point(tmp_path, variant, rep, switches, held, kb, refused):
    """One synthetic point of experiment 9: 20 sessions over 10 s, 3 nodes; ``switches``
    as (t, node, what, value); ``held`` entries a node holds per connection at the peak."""
    folder = tmp_path / f"{variant}-r{rep}"
    folder.mkdir()
    for node in ("fw1", "fw2", "fw3"):
        with open(folder / f"{node}.events.jsonl", "w") as fh:
            for t, who, what, value in switches:
                if who == node:
                    fh.write(json.dumps({"t": 100 + t, "node": node, "event": "sync_switch",
                                         what: value}) + "\n")
    records = [{"session": i, "outcome": "ok", "t_start": 100 + i * 0.5,
                "data_refusals": int(i < refused * 20)} for i in range(20)]
    snapshots = [{"t": 100 + t, "nodes": {n: {"entries": round(owned * 3 * held),
                                              "sync": {"entries_owned": owned}}
                                          for n in ("fw1", "fw2", "fw3")}}
                 for t, owned in ((1, 2), (3, 10), (5, 20), (7, 10))]
    counters = {"data_bytes_sent": kb * 1000, "ack_bytes_sent": 0}
    return {"variant": variant, "repetition": rep, "dir": str(folder), "records": records,
            "t_traffic_start": 100.0, "t_traffic_end": 110.0, "snapshots": snapshots,
            "events": [{"event": "ftp_clients_start", "t": 100.0}],
            "stats": {n: {"sync": {"counters": counters if n == "fw1" else {}}}
                      for n in ("fw1", "fw2", "fw3")},
            "spec": {"traffic": {"sessions": 20}}, "params": {}}


UP_AND_BACK = [(t, n, what, value) for n in ("fw1", "fw2", "fw3") for t, what, value in (
    (2, "active", "periodic"), (2.5, "replication", "backup"), (7, "replication", "full"),
    (7.5, "active", "ondemand"))]


def test_experiment_9_judges_the_switches_and_what_auto_saves(tmp_path):
    def points(base, auto_switches, auto_kb=(200, 210, 190)):
        base.mkdir()
        return ([_e9_point(base, "auto", r, auto_switches, 0.7, auto_kb[r], 0.5)
                 for r in range(3)]
                + [_e9_point(base, "ondemand", r, [], 1.0, 700 + r, 0) for r in range(3)])
    result = analysis.auto_switching(points(tmp_path / "one", UP_AND_BACK), str(tmp_path / "e9"))
    assert result["verdict"] == "holds", result["why"]
    assert result["figures"]
    assert "back to on demand 2 ± 0" in result["why"]  # offered sessions/s in the second before
    # a node that never switches back (the load never fell to half the budget, or stuck):
    # does not hold, and says which part
    stuck = [s for s in UP_AND_BACK if not (s[1] == "fw2" and s[3] == "ondemand")]
    result = analysis.auto_switching(points(tmp_path / "two", stuck), str(tmp_path / "e9"),
                                     draw=False)
    assert result["verdict"] == "does not hold"
    assert "once each: does not hold" in result["why"]
    # auto sending as much as on demand: the intervals overlap, that part is not shown
    result = analysis.auto_switching(points(tmp_path / "three", UP_AND_BACK, (700, 702, 701)),
                                     str(tmp_path / "e9"), draw=False)
    assert result["verdict"] == "holds (in part)"
    assert "fewer sync bytes than on demand: not shown" in result["why"]


def test_experiment_9_dates_the_switch_against_the_on_demand_twin_passing_the_budget():
    from experiments.analysis.auto_switching import crossed, switch_lags
    # the twin's DATA bytes grow as 1000 t^2: over the last second, 1000 (2t - 1) bytes/s,
    # past 4000 once t > 2.5, at the snapshot of 2.75 s
    twin = {"repetition": 0, "events": [{"event": "ftp_clients_start", "t": 50.0}],
            "t_traffic_start": 50.0,
            "snapshots": [{"t": 50 + k / 4, "nodes": {"fw1": {"sync": {"counters": {
                "data_bytes_sent": 1000 * (k / 4) ** 2}}, "entries": k}}}
                          for k in range(21)]}
    assert crossed(twin, lambda s: s["sync"]["counters"]["data_bytes_sent"], 4000, 1.0) == 2.75
    assert crossed(twin, lambda s: s["entries"], 10, 0.0) == 2.75  # a level: 11 entries
    auto = {"repetition": 0, "spec": {"cluster": {"budget_bandwidth": 4000,
                                                  "budget_entries": 60}},
            "_switches": [{"t": 3.5, "node": "fw1", "what": "active", "value": "periodic",
                           "why": 4500},
                          {"t": 4.0, "node": "fw1", "what": "replication", "value": "backup",
                           "why": 66}]}
    lags = switch_lags([auto], [twin])
    assert lags["bandwidth"] == [0.75] and lags["entries"] == [1.1]
