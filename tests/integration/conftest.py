"""Integration tests bring up real Mininet networks; they need root and OVS."""
import os
import shutil
import subprocess

import pytest


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (Mininet creates namespaces and veths)"
    for tool in ("mnexec", "ovs-vsctl", "ethtool"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (run 'make setup')"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "Mininet's Python package is not importable (use the .venv that 'make setup' makes)"
    from topo.net import SetupError, ensure_ovs
    try:
        ensure_ovs()
    except (SetupError, OSError, subprocess.SubprocessError) as err:
        return f"Open vSwitch is not usable: {err}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    for item in items:
        if "mininet" in item.keywords:
            reason = reason or _why_not() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def leftovers(run_id: str) -> list[str]:
    """What a run may leave behind: bridges, host shells, its processes, its folder."""
    found = []
    bridges = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                             text=True).stdout.split()
    found += [f"bridge {b}" for b in bridges if b in ("s1", "s2", "s3")]
    if os.path.exists("/sys/class/net/s3"):  # the sync network: a kernel bridge
        found.append("bridge s3 (kernel)")
    for line in subprocess.run(["ps", "-ewwo", "pid=,stat=,args="], capture_output=True,
                               text=True).stdout.splitlines():
        pid, stat, args = line.split(None, 2) if len(line.split(None, 2)) == 3 else (0, "Z", "")
        if stat.startswith("Z"):
            continue  # a zombie holds nothing; PID 1 of a container may never reap it
        if "mininet:" in args or f"--run-id {run_id}" in args:
            found.append(f"pid {pid}: {args[:80]}")
    from nodes.observe.client import RUN_ROOT
    if os.path.exists(os.path.join(RUN_ROOT, run_id)):
        found.append(f"folder {RUN_ROOT}/{run_id}")
    return found


@pytest.fixture
def cluster_factory(tmp_path):
    """Make clusters that are torn down after the test, also when it fails."""
    from topo.net import Cluster
    made = []

    def make(n: int = 3, rules: str = "experiments/rules/ftp.rules", **kw):
        """A started cluster; ``kw`` goes to Cluster (e.g. sync={"mode": "ondemand"})."""
        run_id = f"fwc-test-{os.getpid()}-{len(made)}"
        cluster = Cluster(str(tmp_path / run_id), rules, n=n, run_id=run_id, **kw)
        made.append(cluster)
        return cluster.__enter__()

    yield make
    for cluster in made:
        cluster.stop()
        assert leftovers(cluster.run_id) == []
