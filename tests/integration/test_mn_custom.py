"""topo/cluster.py works from Mininet's own command line."""
import subprocess

import pytest

pytestmark = pytest.mark.mininet


def test_mn_custom_builds_the_cluster():
    out = subprocess.run(["mn", "--custom", "topo/cluster.py", "--topo", "fwcluster,2",
                          "--switch", "fwovs", "--controller", "none", "--test", "none"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "*** Starting 3 switches" in out.stderr
    assert "fw1 fw2" in out.stderr and "Exception" not in out.stderr
