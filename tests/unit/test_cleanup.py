"""What a cleanup may remove: only the project's own host shells and links, by name."""
import pytest

pytest.importorskip("mininet.node", reason="topo.net builds on Mininet")
from topo.net import OUR_LINK, OUR_SHELL  # noqa: E402


def test_only_the_projects_host_shells_and_links_match():
    for ours in ("bash --norc --noediting -is mininet:fw1", "bash -is mininet:srv2",
                 "bash -is mininet:c1", "bash -is mininet:s3", "bash -is mininet:c0"):
        assert OUR_SHELL.search(ours), ours
    for theirs in ("bash -is mininet:h1", "bash -is mininet:r1", "vim mininet:fw1.txt",
                   "bash -is mininet:s4"):
        assert not OUR_SHELL.search(theirs), theirs
    assert all(OUR_LINK.match(n) for n in ("fw1-eth0", "c2-eth0", "srv1-eth0", "s1-eth12"))
    assert not any(OUR_LINK.match(n) for n in ("h1-eth0", "eth0", "veth3f2", "s4-eth1",
                                              "fw1-eth0x", "notours0"))
