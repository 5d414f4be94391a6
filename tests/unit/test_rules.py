import pytest

from nodes.packet import PROTO_ICMP, PROTO_TCP, PROTO_UDP, ip_bytes
from nodes.rules import RuleError, RuleSet

RULES = """
# src          dst            proto dport       action
10.0.0.0/25    10.0.0.101     tcp   21          accept helper=ftp
10.0.0.5       any            tcp   any         drop
10.0.0.0/24    any            tcp   any         accept
any            any            udp   1000-2000   accept
any            any            icmp  any         accept
"""


def match(rs, proto, src, dst, dport):
    rule = rs.match(proto, ip_bytes(src), ip_bytes(dst), dport)
    return (rule.lineno, rule.action, rule.helper) if rule else None


def test_first_match_wins_and_carries_helper():
    rs = RuleSet.from_text(RULES)
    assert match(rs, PROTO_TCP, "10.0.0.5", "10.0.0.101", 21) == (3, "accept", "ftp")
    assert match(rs, PROTO_TCP, "10.0.0.5", "10.0.0.102", 21) == (4, "drop", None)
    assert match(rs, PROTO_TCP, "10.0.0.6", "10.0.0.102", 80) == (5, "accept", None)


def test_implicit_final_deny():
    rs = RuleSet.from_text(RULES)
    assert match(rs, PROTO_TCP, "192.0.2.1", "10.0.0.101", 21) is None
    assert match(rs, PROTO_UDP, "10.0.0.1", "10.0.0.2", 999) is None
    assert match(rs, PROTO_UDP, "10.0.0.1", "10.0.0.2", 2000) == (6, "accept", None)
    assert RuleSet.from_text("").match(PROTO_ICMP, ip_bytes("1.2.3.4"), ip_bytes("1.2.3.5"), 0) is None


def test_icmp_ignores_port():
    rs = RuleSet.from_text(RULES)
    assert match(rs, PROTO_ICMP, "1.1.1.1", "2.2.2.2", 0) == (7, "accept", None)


@pytest.mark.parametrize("line, words", [
    ("any any tpc 21 accept", "unknown protocol 'tpc'"),
    ("any any tcp 21 allow", "unknown action 'allow'"),
    ("any any tcp 70000 accept", "port range"),
    ("10.0.0.0/33 any tcp 21 accept", "prefix length"),
    ("10.0.0 any tcp 21 accept", "not an IPv4 or IPv6 address"),
        ("10.0.0.0/8 fd00::/64 tcp 21 accept", "different families"),
        ("fd00::/64 any icmp any accept", "icmpv6 IPv6"),
        ("fd00::/129 any tcp 21 accept", "0..128"),
    ("any any tcp accept", "needs 5 fields"),
    ("any any tcp 21 accept helper=http", "helper=ftp"),
])
def test_bad_rules_name_line_and_fix(line, words):
    with pytest.raises(RuleError) as err:
        RuleSet.from_text("# ok\n" + line, "fw.rules")
    assert str(err.value).startswith("fw.rules:2: ")
    assert words in str(err.value)


def test_missing_file_is_one_clear_line(tmp_path):
    with pytest.raises(RuleError, match="cannot read rule file"):
        RuleSet.from_file(str(tmp_path / "nope.rules"))
