"""The console's wait for the nodes to agree with the controller (no cluster needed)."""
from experiments.console.breaking import membership_behind

DOWN = {"event": "node_down", "node": "fw1"}
UP = {"event": "node_up", "node": "fw1"}


def test_a_survivor_still_counting_the_crashed_node_is_behind():
    # CI caught this: the controller had moved fw1's flows, fw2 had noticed,
    # fw3's own dead timer had not fired yet, and 'status' printed fw3 as
    # backed up by fw1.
    views = {"fw2": {"fw2", "fw3"}, "fw3": {"fw1", "fw2", "fw3"}}
    assert membership_behind([DOWN], views) == ["fw3"]
    views["fw3"].discard("fw1")
    assert membership_behind([DOWN], views) == []


def test_a_rejoined_node_must_be_in_every_view_and_its_own_is_not_judged():
    views = {"fw1": {"fw1"}, "fw2": {"fw2", "fw3"}, "fw3": {"fw1", "fw2", "fw3"}}
    assert membership_behind([UP], views) == ["fw2"]


def test_the_last_event_for_a_node_is_the_one_that_counts():
    views = {"fw2": {"fw1", "fw2"}}
    assert membership_behind([DOWN, UP], views) == []
    assert membership_behind([UP, DOWN], views) == ["fw2"]


def test_no_news_nothing_to_wait_for():
    assert membership_behind([], {"fw2": {"fw1"}}) == []
