"""Experiment specs: validation (one clear line), sweeps, the demo spec itself."""
import pytest

from experiments import spec as specs


def write(tmp_path, text):
    path = tmp_path / "x.toml"
    path.write_text(text)
    return str(path)


def test_demo_spec_tells_the_story_in_three_runs():
    s = specs.load("experiments/specs/demo.toml")
    pts = specs.points(s)
    runs = [specs.resolve(s, p) for p in pts]
    assert [r["cluster"]["sync"] for r in runs] == ["none", "ondemand", "ondemand"]
    assert [r["timeline"] for r in runs[:2]] == [[], []]
    assert [e["fault"] for e in runs[2]["timeline"]] == ["crash"]
    assert runs[2]["cluster"]["failover"] == "backup" and s["analysis"] == "story"


def test_repetitions_get_their_own_seeds(tmp_path):
    s = specs.load(write(tmp_path, "seed = 7\nrepetitions = 3\n"))
    assert [p.seed for p in specs.points(s)] == [7000, 7001, 7002]


@pytest.mark.parametrize("text, words", [
    ("nodes = 3", "unknown field 'nodes'"),
    ("[topology]\nnodes = 9", "topology.nodes = 9: must be less than or equal to 8"),
    ("[topology]\nnodes = [1, 0]", "topology.nodes = 0: must be greater than or equal to 1"),
    ("[topology]\nnodes = []", "topology.nodes = []: an empty list sweeps nothing"),
    ("[cluster]\nsync = \"sometimes\"", "cluster.sync = 'sometimes': must be 'none'"),
    ("[cluster]\ntriggers = [\"full_moon\"]", "cluster.triggers.0 = 'full_moon': must be"),
    ("[cluster]\nk = 0", "cluster.k = 0: must be greater than or equal to 1"),
    ("[cluster]\nk = 1.5", "cluster.k = 1.5: must be a valid integer"),
    ("[cluster]\nhold = \"false\"", "cluster.hold = 'false': must be a valid boolean"),
    ("[cluster]\nheartbeat = 0.5", "heartbeat (0.5 s) must be shorter than dead_after"),
    ("[cluster]\ncolour = 1", "unknown field 'cluster.colour'"),
    ("[cluster]\nrules = \"missing.rules\"", "cannot read rule file missing.rules"),
    ("[traffic]\nmodes = [\"PORT\", \"LPRT\"]", "traffic.modes"),
    ("[traffic]\ntimeout = 0", "traffic.timeout"),
    ("[[timeline]]\nat = 1\nfault = \"meteor\"", "fault 'meteor' unknown"),
    ("[[timeline]]\nat = 1\nfault = \"crash\"\nnode = \"fw9\"", "node 'fw9' is not fw1..fw3"),
    ("[[timeline]]\nat = -1\nfault = \"crash\"\nnode = \"fw1\"", "'at' must be seconds"),
    ("[[timeline]]\nat = 1\nfault = \"sync_loss\"\nnode = \"fw1\"", "needs 'percent'"),
    ("[[timeline]]\nat = 1\nfault = \"link_down\"\nnode = \"fw1\"\nintf = \"eth7\"",
     "intf 'eth7'"),
    ("[cluster]\nfailover = \"maybe\"", "cluster.failover"),
    ("[cluster]\nlatency_ms = 5", "needs a cluster network"),
    ("[cluster]\nsync = \"home\"\nlatency_ms = -1", "latency_ms"),
    ("[cluster]\nsync = \"home\"\nlatency_via = \"pigeon\"", "latency_via"),
    ("[cluster]\nsync = \"ondemand\"\ncapture = [\"eth0\"]", "cluster.capture must list"),
    ("[cluster]\ncapture = [\"sync\"]", "capture \"sync\" needs a cluster network"),
    ("[traffic]\nfamily = \"ipv6\"", "cannot run PASV, PORT (they carry IPv4 addresses"),
    ("[traffic]\nfamily = \"ipv5\"", "traffic.family"),
    ("topology = 3", "[topology] must be a table"),
    ("this is not toml", "not valid TOML"),
])
def test_bad_specs_fail_in_one_line(tmp_path, text, words):
    with pytest.raises(specs.SpecError) as err:
        specs.load(write(tmp_path, text))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_dry_run_needs_no_root(capsys):
    from experiments.cli import main
    assert main(["run", "experiments/specs/demo.toml", "--dry-run"]) == 0
    assert "3 point(s)" in capsys.readouterr().out
    assert main(["run", "nope.toml", "--dry-run"]) == 2


def test_cluster_size_bound_matches_the_topology():
    cluster = pytest.importorskip("topo.cluster", reason="Mininet not installed")
    assert specs.MAX_NODES == cluster.MAX_NODES


def test_variants_override_and_sweep_inside(tmp_path):
    spec = specs.load(write(tmp_path, """
repetitions = 2
[cluster]
sync = "periodic"
[[variants]]
label = "periodic"
cluster.interval = [0.05, 5.0]
[[variants]]
label = "ondemand"
cluster.sync = "ondemand"
"""))
    pts = specs.points(spec)
    assert [p.name for p in pts] == ["periodic-interval0.05-r0", "periodic-interval0.05-r1",
                                     "periodic-interval5.0-r0", "periodic-interval5.0-r1",
                                     "ondemand-r0", "ondemand-r1"]
    assert pts[2].spec["cluster"]["interval"] == 5.0
    assert pts[4].spec["cluster"]["sync"] == "ondemand"
    assert pts[4].spec["cluster"]["interval"] == 1.0  # the default, not the other variant's
    assert pts[0].seed == pts[4].seed  # same workload in every variant


def test_quick_form_keeps_named_variants_and_shrinks(tmp_path):
    path = write(tmp_path, """
repetitions = 5
[[variants]]
label = "a"
[[variants]]
label = "b"
[quick]
repetitions = 1
variants = ["b"]
traffic.sessions = 4
""")
    full, quick = specs.load(path), specs.load(path, quick=True)
    assert len(specs.points(full)) == 10
    [only] = specs.points(quick)
    assert only.variant == "b" and only.spec["traffic"]["sessions"] == 4


@pytest.mark.parametrize("text, words", [
    ("[[variants]]\nlabel = \"Bad Label\"", "needs a label"),
    ("[[variants]]\nlabel = \"a\"\nseed = 3", "cannot override 'seed'"),
    ("[[variants]]\nlabel = \"a\"\ncluster.speed = 3", "unknown field 'variants.a.cluster.speed'"),
    ("[[variants]]\nlabel = \"a\"\ncluster.sync = \"never\"", "[a]"),
    ("[[variants]]\nlabel = \"a\"\n[[variants]]\nlabel = \"a\"", "labels must differ"),
    ("[quick]\nvariants = [\"zz\"]", None),
    ("[traffic]\nthrottle = -1", "traffic.throttle"),
])
def test_bad_variants_fail_in_one_line(tmp_path, text, words):
    path = write(tmp_path, text)
    if words is None:  # only the quick form looks at quick.variants
        specs.load(path)
        with pytest.raises(specs.SpecError, match="unknown labels"):
            specs.load(path, quick=True)
        return
    with pytest.raises(specs.SpecError) as err:
        specs.load(path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_repeated_snapshot_expands_to_one_entry_per_time():
    from experiments.timeline import check, expand
    event = {"at": 0.5, "fault": "snapshot", "every": 0.25, "until": 1.5}
    assert check(event, 3) is None
    assert [e["at"] for e in expand([event])] == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert all("every" not in e for e in expand([event]))
    assert "go together" in check({"at": 1, "fault": "crash", "node": "fw1", "every": 1,
                                   "until": 2}, 3)
    assert "go together" in check({"at": 1, "fault": "snapshot", "every": 1}, 3)
    assert "at most" in check({**event, "every": 0.0001}, 3)


def test_a_variants_timeline_adds_to_the_specs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[timeline]]\nat = 0.1\nfault = "snapshot"\n'
                    '[[variants]]\nlabel = "a"\n[[variants.timeline]]\nat = 1\nfault = "crash"\n'
                    'node = "fw1"\n[[variants]]\nlabel = "b"\n')
    a, b = specs.points(specs.load(str(path)))
    assert [e["fault"] for e in a.spec["timeline"]] == ["snapshot", "crash"]
    assert [e["fault"] for e in b.spec["timeline"]] == ["snapshot"]


def test_a_dual_stack_plan_runs_the_extended_modes_over_ipv6(tmp_path):
    from experiments.workload import plan_sessions
    spec = specs.load(write(tmp_path, '[traffic]\nfamily = "ipv6"\nmodes = ["EPRT", "EPSV"]'))
    assert spec["traffic"]["family"] == "ipv6"
    plan = plan_sessions(8, 1, 2, ["PASV", "EPSV", "PORT", "EPRT"], {"f": "0"}, 1, "dual")
    assert {(s["mode"], s["family"], ":" in s["server"]) for s in plan[1]} == {
        ("PASV", "ipv4", False), ("PORT", "ipv4", False), ("EPSV", "ipv6", True),
        ("EPRT", "ipv6", True)}


def test_a_ramp_spreads_the_sessions_by_its_rate_and_a_bad_one_is_refused():
    from experiments.workload import plan_sessions, ramp_starts
    starts = ramp_starts(200, [[0, 1], [3, 12], [6, 1], [9, 1]])
    assert starts == sorted(starts) and 0 < starts[0] and starts[-1] < 9
    per_second = [sum(1 for s in starts if k <= s < k + 1) for k in range(9)]
    assert max(per_second) in per_second[2:4]  # the peak at 3 s
    assert per_second[7] < per_second[3] / 5  # the low tail
    assert ramp_starts(4, [[0, 1], [2, 1]]) == [0.25, 0.75, 1.25, 1.75]  # a flat ramp: even
    plan = plan_sessions(10, 2, 1, ["PASV"], {"f": "0" * 64}, seed=1, ramp=[[0, 1], [1, 1]])
    assert sorted(i["at"] for items in plan.values() for i in items) == \
        pytest.approx([0.05 + 0.1 * i for i in range(10)])
    from experiments.schema import Traffic
    for bad in ([[0, 1]], [[1, 1], [2, 1]], [[0, 1], [0, 2]], [[0, -1], [1, 1]], [[0, 0], [1, 0]]):
        with pytest.raises(ValueError, match="traffic.ramp must be"):
            Traffic(ramp=bad)
