"""The CLI's `where`: which node owns a host's connections, which hold copies (pure part)."""
import pytest

pytest.importorskip("mininet.cli", reason="the CLI module imports Mininet's CLI")
from experiments.console.inspecting import placement, trace_match, where_line  # noqa: E402


def entry(src, sport, dst, dport, owner, state="ESTABLISHED", proto=6):
    return {"orig": f"{proto} {src} {sport} {dst} {dport}", "owner": owner, "state": state,
            "tuple": {"proto": proto, "src": src, "sport": sport, "dst": dst, "dport": dport}}


def test_a_hosts_connections_with_owner_copies_and_the_switches_node():
    dumps = {"fw1": {"entries": [entry("10.0.0.1", 40000, "10.0.0.201", 21, "fw1"),
                                 entry("10.0.0.2", 40001, "10.0.0.201", 21, "fw3")]},
             "fw2": {"entries": [entry("10.0.0.1", 40000, "10.0.0.201", 21, "fw1",
                                       state="SYN_SENT")]},
             "fw3": {"entries": [entry("10.0.0.2", 40001, "10.0.0.201", 21, "fw3")]}}
    (c,) = placement(dumps, {"10.0.0.1", "fd00::1:1"})
    assert c["owner"] == "fw1" and c["copies"] == ["fw2"] and c["state"] == "ESTABLISHED"
    assert "owner fw1  copies fw2" in where_line(c, "fw1")
    assert where_line(c, "fw2").endswith("switches send it to fw2  (a copy there)")
    assert where_line(c, "fw3").endswith("(no state there)")
    assert len(placement(dumps, {"10.0.0.201"})) == 2


def test_the_trace_names_each_familys_fields():
    assert trace_match({"proto": 6, "src": "10.0.0.1", "dst": "10.0.0.201", "sport": 1,
                        "dport": 21}) == "tcp,nw_src=10.0.0.1,nw_dst=10.0.0.201,tp_src=1,tp_dst=21"
    assert trace_match({"proto": 17, "src": "fd00::1:1", "dst": "fd00::2:1", "sport": 5,
                        "dport": 6}).startswith("udp6,ipv6_src=fd00::1:1,ipv6_dst=fd00::2:1")
    assert trace_match({"proto": 1, "src": "10.0.0.1", "dst": "10.0.0.201", "sport": 0,
                        "dport": 0}) == "icmp,nw_src=10.0.0.1,nw_dst=10.0.0.201"


def test_every_host_address_names_its_host_switch_and_port():
    from experiments.console.inspecting import host_ports
    ports = host_ports(2, 1)
    assert ports["10.0.0.2"] == ("c2", "s1", 102) and ports["fd00::1:2"] == ("c2", "s1", 102)
    assert ports["10.0.0.201"] == ("srv1", "s2", 101) and len(ports) == 6
