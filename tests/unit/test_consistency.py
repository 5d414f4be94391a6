"""The cluster consistency check, on the dumps and stats of simulated nodes."""
from nodes.engine import INSIDE, OUTSIDE
from nodes.observe.consistency import check
from nodes.packet import key_tuple
from tests.unit.cluster_sim import Net
from tests.unit.frames import CLIENT, SERVER, tcp


def handshake(fw, sport, t):
    fw.process(tcp(flags="S", sport=sport, dport=80), OUTSIDE, t)
    fw.process(tcp(SERVER, CLIENT, 80, sport, "SA", 5000, 1001), INSIDE, t)
    fw.process(tcp(flags="A", sport=sport, dport=80, seq=1001, ack=5001), OUTSIDE, t)


def snapshot(net, nodes=None):
    """What the CLI's 'check' gathers: every live node's dump and stats."""
    return {f"fw{i}": {"dump": net.fw[i].dump(net.t), "stats": {"sync": net.sync[i].stats(net.t)}}
            for i in (nodes or net.fw) if i not in net.down}


def loaded(n=3, **config):
    net = Net(n, **config)
    for i in net.fw:
        for port in range(10):
            handshake(net.fw[i], 40000 + 100 * i + port, net.t)
    net.run(0.5)
    return net


def test_a_quiet_cluster_keeps_its_promises():
    net = loaded()
    report = check(snapshot(net))
    assert report.promised and report.ok, report.lines()
    assert report.checked == 30


def test_a_copy_missing_on_a_backup_or_in_another_state_is_a_violation():
    net = loaded()
    victim = next(e for e in net.fw[2].table.entries() if e.owner == "fw1")
    net.fw[2].table.remove(victim)
    other = next(e for e in net.fw[2].table.entries() if e.owner == "fw1")
    other.state = "FIN_WAIT"
    kinds = sorted(v[0] for v in check(snapshot(net)).violations)
    assert kinds == ["missing_on_backup", "state_differs"]
    line = [v for v in check(snapshot(net)).violations if v[0] == "missing_on_backup"][0]
    assert line[1] == "fw2" and str(key_tuple(victim.orig)[2]) in line[2]  # names node and connection


def test_copies_of_a_gone_owner_and_double_owners_are_violations():
    net = loaded()
    view = snapshot(net, [2, 3])  # fw1 gone...
    for i in (2, 3):  # ...and taken for dead by both, who keep its copies (the old bug)
        view[f"fw{i}"]["stats"]["sync"]["alive"] = [2, 3]
    kinds = {v[0] for v in check(view).violations}
    assert "copy_of_gone_owner" in kinds
    net = loaded()
    entry = next(e for e in net.fw[2].table.entries() if e.owner == "fw1")
    entry.owner = "fw2"  # fw2 claims fw1's connection as its own
    assert "owned_twice" in {v[0] for v in check(snapshot(net)).violations}


def test_where_the_mode_promises_nothing_it_reports_findings_not_violations():
    net = loaded(mode="periodic", interval=60.0)
    report = check(snapshot(net))
    assert not report.promised and report.ok
    assert {f[0] for f in report.findings} == {"missing_on_backup"}
    assert "promises nothing" in report.lines()[0]


def test_a_connection_changed_a_moment_ago_is_not_judged():
    net = loaded()
    handshake(net.fw[1], 49999, net.t)  # not yet on its backup: no flush ran
    report = check(snapshot(net))
    assert report.ok and report.checked == 30  # the young one is left out


def test_per_connection_backups_are_checked_where_they_are():
    net = loaded(selection="connection")
    assert check(snapshot(net)).ok


def test_kernel_nodes_are_checked_from_conntrackds_caches():
    from nodes.observe.consistency import check_kernel

    def entry(port, state="ESTABLISHED", age=5):
        return {"proto": 6, "state": state, "age": age,
                "tuple": {"proto": 6, "src": "10.0.0.1", "sport": port, "dst": "10.0.0.201",
                          "dport": 21}}

    def node(internal, external):
        return {"dump": {"internal": internal, "external": external, "entries": [],
                         "external_cache": True},
                "stats": {"sync": {"mode": "ftfw"}}}
    quiet = {"fw1": node([entry(1)], [entry(2)]), "fw2": node([entry(2)], [entry(1)])}
    report = check_kernel(quiet)
    assert report.ok and report.checked == 2 and report.promised
    broken = {"fw1": node([entry(1), entry(3), entry(4, age=0)], [entry(2)]),
              "fw2": node([entry(2), entry(3)], [entry(1, "FIN_WAIT")])}
    kinds = sorted((v[0], v[1]) for v in check_kernel(broken).violations)
    assert kinds == [("missing_on_backup", "fw1"), ("missing_on_backup", "fw2"),
                     ("owned_twice", "fw1, fw2"), ("state_differs", "fw2")]
    alarm = {n: {**v, "stats": {"sync": {"mode": "alarm"}}} for n, v in broken.items()}
    assert check_kernel(alarm).ok and check_kernel(alarm).findings  # ALARM promises less
