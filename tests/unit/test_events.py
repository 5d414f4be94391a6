"""The node's event log: written a slice at a time, bounded, losses counted."""
import io
import json

from nodes.shell.events import EventLog


class Clock:
    """Advances 100 us each time it is read: writing costs time."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        self.t += 1e-4
        return self.t


def events(n):
    return [(float(i), "new", {"n": i}) for i in range(n)]


def test_a_slice_of_the_log_is_written_within_its_budget():
    """Found by the SYN flood: half a second of events (8k a second) written at once
    kept the node from its heartbeats for up to 135 ms; peers took it for dead."""
    fh = io.StringIO()
    log = EventLog(fh, "fw1", 100.0, clock=Clock())
    log.add(events(4000))
    written = log.write(0.002)
    assert 0 < written < 4000 and len(log.pending) == 4000 - written
    while log.pending:
        log.write(0.002)
    lines = [json.loads(line) for line in fh.getvalue().splitlines()]
    assert [e["n"] for e in lines] == list(range(4000))  # nothing lost, in order
    assert lines[0] == {"t": 100.0, "node": "fw1", "event": "new", "n": 0}


def test_the_log_is_bounded_and_counts_what_it_leaves_out():
    log = EventLog(io.StringIO(), "fw1", 0.0, limit=100)
    log.add(events(60))
    log.add(events(60))
    assert len(log.pending) == 100 and log.lost == 20
    log.close()  # writes the rest
    assert log.written == 100


def test_without_a_file_nothing_is_kept():
    log = EventLog(None, "fw1", 0.0)
    log.add(events(10))
    assert log.write(0.002) == 0 and not log.pending
