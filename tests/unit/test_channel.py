"""The reliable channel's bounds: resend queue, backoff, per-tick budget, pending cap."""
from nodes import syncproto as sp
from nodes.sync import channel as chmod
from nodes.sync.channel import Channel

KEY = b"k" * 32
RECORD = (sp.R_COMMON, {"owner": 1, "name": "x", "value": b"v" * 1000})  # one a message


def loaded(n: int) -> Channel:
    ch = Channel()
    ch.pending.extend([RECORD] * n)
    return ch


def test_a_silent_peer_gets_at_most_max_unacked_messages_the_rest_waits():
    """Issue 14: the resend queue was unbounded (one tick resent 4.7 MiB)."""
    ch = loaded(5000)
    sent = ch.pack(1, 2, 100, KEY, 0.0, 0.02)
    assert len(sent) == len(ch.unacked) == chmod.MAX_UNACKED
    assert len(ch.pending) == 5000 - chmod.MAX_UNACKED  # unpacked, not lost
    assert ch.pack(1, 2, 100, KEY, 0.0, 0.02) == []  # nothing more until acknowledged
    done = ch.acknowledge(100)
    assert done == list(range(1, 101))
    assert len(ch.pack(1, 2, 100, KEY, 0.0, 0.02)) == 100


def test_urgent_records_leave_first_even_past_max_unacked_and_alone_with_budget_0():
    """What a held packet waits for goes at once: ahead of what is pending, and past a
    full window of unacknowledged messages (it then waits behind those only)."""
    ch = loaded(5000)
    ch.pack(1, 2, 100, KEY, 0.0, 0.02)
    assert len(ch.unacked) == chmod.MAX_UNACKED
    ch.urgent.append((sp.R_COMMON, {"owner": 1, "name": "held", "value": b"h"}))
    ((seq, data, kinds),) = ch.pack(1, 2, 100, KEY, 0.0, 0.02, budget=0)
    assert seq == chmod.MAX_UNACKED + 1 and kinds == [sp.R_COMMON] and b"held" in data
    assert not ch.urgent and len(ch.pending) == 5000 - chmod.MAX_UNACKED  # still waiting


def test_one_pack_takes_at_most_the_budget_and_the_rest_waits():
    """A failover queues thousands of records at once; packing them all in one round
    kept a node from its heartbeats past dead_after (issue 14)."""
    small = (sp.R_COMMON, {"owner": 1, "name": "x", "value": b"v"})
    ch = Channel()
    ch.pending.extend([small] * 5000)
    sent = ch.pack(1, 2, 100, KEY, 0.0, 0.02)
    assert sum(len(kinds) for _, _, kinds in sent) == chmod.PACK_BUDGET
    assert len(ch.pending) == 5000 - chmod.PACK_BUDGET
    rest = ch.pack(1, 2, 100, KEY, 0.0, 0.02, budget=None)
    assert sum(len(kinds) for _, _, kinds in rest) == 5000 - chmod.PACK_BUDGET and not ch.pending


def test_resends_back_off_and_one_tick_resends_at_most_the_budget():
    ch = loaded(200)
    ch.pack(1, 2, 100, KEY, 0.0, 0.02)
    times = []
    now = 0.0
    while now < 1.0:
        now = round(now + 0.001, 3)
        out = ch.due(now, 0.02)
        assert len(out) <= chmod.RESEND_BUDGET
        if out and ch.unacked[1].last_sent == now:
            times.append(now)
    # message 1 is resent after 20, 40, 80, then every 160 ms (BACKOFF 8)
    gaps = [round(b - a, 2) for a, b in zip([0.0] + times, times)]
    assert gaps[:4] == [0.02, 0.04, 0.08, 0.16] and set(gaps[3:]) == {0.16}, gaps


def test_pending_records_beyond_the_cap_are_dropped_and_counted(monkeypatch):
    monkeypatch.setattr(chmod, "MAX_UNACKED", 10)
    ch = loaded(100)
    ch.max_pending = 50  # the sync engine sets it (chmod.pending_cap)
    ch.pack(1, 2, 100, KEY, 0.0, 0.02)
    assert len(ch.unacked) == 10 and len(ch.pending) == 50 and ch.overflow == 40


def test_freshness_counters_accept_each_value_once_even_out_of_order():
    ch = Channel()
    assert ch.fresh(5) and ch.fresh(3) and ch.fresh(9)  # 3 came late: still fresh
    assert not ch.fresh(3) and not ch.fresh(9) and not ch.fresh(5)  # replays
    assert ch.fresh(4)
    assert ch.fresh(9 + chmod.REPLAY_WINDOW) and not ch.fresh(9)  # out of the window
