"""Backup group arithmetic for N = 2..8 and k = 1..N-1, and the hand-off."""
import itertools

import pytest

from nodes.groups import adopter, connection_backups, node_backups

CASES = [(n, k) for n in range(2, 9) for k in range(1, n)]


def test_the_seeds_three_node_cycle():
    assert node_backups([1, 2, 3], 1) == {1: [2], 2: [3], 3: [1]}


@pytest.mark.parametrize("n, k", CASES)
def test_every_node_has_k_distinct_backups_and_backs_up_k_nodes(n, k):
    members = list(range(1, n + 1))
    groups = node_backups(members, k)
    for m, backups in groups.items():
        assert len(backups) == len(set(backups)) == k and m not in backups
    load = {m: sum(m in b for b in groups.values()) for m in members}
    assert set(load.values()) == {k}  # each holds its own and k others: (1 + k) / N
    assert node_backups(list(reversed(members)), k) == groups  # order-independent


@pytest.mark.parametrize("n, k", CASES)
def test_after_any_single_failure_no_node_is_left_without_a_backup(n, k):
    members = list(range(1, n + 1))
    for failed in members:
        alive = [m for m in members if m != failed]
        after = node_backups(alive, k)
        if len(alive) >= 2:
            assert all(len(b) == min(k, len(alive) - 1) >= 1 for b in after.values())
        owner = adopter(members, k, failed, alive)
        assert owner in alive and owner in node_backups(members, k)[failed]


@pytest.mark.parametrize("n, k", CASES)
def test_connection_specific_backups(n, k):
    members = list(range(1, n + 1))
    seen = set()
    for i, owner in itertools.product(range(40), members):
        b = connection_backups(i.to_bytes(13, "big"), owner, members, k)
        assert len(b) == len(set(b)) == k and owner not in b
        seen.update(b)
    assert seen == set(members)  # the keys spread state over every node


def test_degenerate_groups():
    assert node_backups([1], 1) == {1: []}
    assert connection_backups(b"x", 1, [1], 1) == []
    assert adopter([1, 2], 1, 1, []) is None
