"""The node's packet loop (nodes/shell/node.py) with its ports and sync socket replaced
by recorders: what it hands to the kernel, and in which order. No root, no network."""
from nodes.conntrack import ORIGINAL
from nodes.engine import INSIDE, OUTSIDE
from nodes.packet import make_key
from nodes.shell.node import Node
from tests.unit.cluster_sim import Net
from tests.unit.frames import CLIENT, SERVER, tcp

WSCALE = [("WScale", 7), ("SAckOK", b"")]


class Port:
    """A data port: frames to read, and what was flushed to the kernel, in ``log``."""

    def __init__(self, log, name):
        self.log, self.name, self.frames, self.queued = log, name, [], []

    def recv_batch(self, limit, sock=None):
        out, self.frames = self.frames[:limit], self.frames[limit:]
        return out

    def send(self, frame):
        self.queued.append(frame)
        return True

    def flush(self):
        self.log.extend(("frame", self.name, f) for f in self.queued)
        self.queued = []
        return 0


class SyncSocket:
    def __init__(self, log):
        self.log = log

    def sendto(self, data, address):
        self.log.append(("sync", address, data))


def node_of(net, i, log):
    """Node ``i`` of a simulated cluster as a packet loop, without its sockets."""
    node = Node.__new__(Node)
    node.engine, node.sync = net.fw[i], net.sync[i]
    node.ports = [Port(log, "outside"), Port(log, "inside")]
    node.sent, node.home, node.delay_line = [0, 0], None, None
    node.sync_sock = SyncSocket(log)
    node.peers = {p: f"10.1.0.{p}" for p in net.sync}
    return node


def test_a_batch_leaves_after_the_records_of_what_it_changed():
    """Write-ahead: a node killed between the two must not have sent a segment whose
    window its backup never heard of (the client's acknowledgement of it would fail
    bound III at the backup, and the download stalled after the takeover). Before the
    fix the frames went first."""
    net = Net(n=2, mode="ondemand", window_sync="change")
    fw1, log = net.fw[1], []
    node = node_of(net, 1, log)
    t = net.t
    # the handshake, straight through the engine, and its records settled
    fw1.process(tcp(dport=80, flags="S", seq=1000, options=WSCALE), OUTSIDE, t)
    fw1.process(tcp(src=SERVER, dst=CLIENT, sport=80, dport=40000, flags="SA", seq=5000,
                    ack=1001, window=65535, options=WSCALE), INSIDE, t)
    fw1.process(tcp(dport=80, flags="A", seq=1001, ack=5001, window=512), OUTSIDE, t)
    net.run(0.01)
    # a batch of the server's data, read by the node's loop
    segments = [tcp(src=SERVER, dst=CLIENT, sport=80, dport=40000, flags="A",
                    seq=5001 + k * 1000, ack=1001, window=512, payload=b"d" * 1000)
                for k in range(8)]
    node.ports[INSIDE].frames = list(segments)
    node.pump(INSIDE)
    kinds = [what for what, *_ in log]
    assert kinds.count("frame") == 8 and "sync" in kinds, kinds
    first_frame = kinds.index("frame")
    assert "frame" not in kinds[:kinds.index("sync")], kinds
    # what the backup got before the first frame left already covers the whole batch
    for what, _, data in log[:first_frame]:
        net.sync[2].receive(data, t)
    (copy,) = net.fw[2].table.entries()
    assert copy.window is not None
    server_direction = copy.window[1 - ORIGINAL]
    assert server_direction.end == 5001 + 8 * 1000
    assert node.sent[OUTSIDE] == 8


class SyncInbox(SyncSocket):
    """A sync socket with messages waiting to be read; each read noted in ``log``."""

    def __init__(self, log, messages):
        super().__init__(log)
        self.messages = list(messages)

    def recv(self, size):
        if not self.messages:
            raise BlockingIOError
        self.log.append(("read",))
        return self.messages.pop(0)


def test_a_long_burst_of_sync_messages_is_acknowledged_as_it_is_read(monkeypatch):
    """A node reads up to SYNC_BUDGET (10 ms) of sync messages at once. A sender
    holding a packet for one message early in a long burst (a bulk answer ahead of it)
    waited for the acknowledgement of the whole read: the hold's p99 during a 200k
    bulk transfer was 24-36 ms. Now what was read is acknowledged every ACK_EVERY
    (1 ms) of reading; here each message takes 0.4 ms of the node's clock."""
    from nodes import syncproto as sp
    from nodes.shell import node as shell
    net = Net(n=2, mode="ondemand")
    t, fw1 = net.t, net.fw[1]
    for i in range(2000):  # fw1's connections, each a record to fw2
        entry = fw1.table.new_entry(make_key(6, bytes([10, 0, i >> 8, i & 255]), 1024 + i,
                                     bytes([10, 0, 0, 200]), 80), "ESTABLISHED", t, "fw1")
        net.sync[1].state_changed("new", entry, t)
    net.sync[1].flush(t, budget=None)
    burst = [data for peer, data in net.sync[1].outbox if peer == 2]
    net.sync[1].outbox.clear()
    assert len(burst) >= 30  # more than a read budget of them
    log = []
    node = node_of(net, 2, log)
    node.sync_sock = inbox = SyncInbox(log, burst)
    clock = iter(t + k * 0.0002 for k in range(100_000))
    monkeypatch.setattr(shell.time, "monotonic", lambda: next(clock))
    node.receive_sync(inbox)
    reads = [k for k, (what, *_) in enumerate(log) if what == "read"]
    acks = [k for k, (what, *rest) in enumerate(log)
            if what == "sync" and sp.decode(rest[1], net.sync[2].key).type == sp.ACK]
    assert inbox.messages and len(reads) > 10  # a long read, cut short by the budget
    assert acks and acks[0] < reads[3]  # the first acknowledgement after a millisecond
    gaps = [sum(a < r < b for r in reads) for a, b in zip([-1] + acks, acks)]
    assert max(gaps) <= 3, gaps  # and one a millisecond from then on


def test_events_are_written_in_the_round_they_happen_not_in_a_burst():
    """The node collected its engines' events only at housekeeping (every 0.5 s) and
    then wrote up to EVENT_BUDGET (2 ms) of them in one round: every half second an
    acknowledgement or a held packet waited behind the burst (replication lag and hold
    samples of 2-3.5 ms, one round in 400, in make bench's sync_lag). Now a round
    writes the events made since the round before."""
    import io

    from nodes.shell.events import EventLog
    net = Net(n=2, mode="ondemand")
    t, fw1 = net.t, net.fw[1]
    node = node_of(net, 1, [])
    node.events = EventLog(io.StringIO(), "fw1", 0.0)
    node.control = None  # housekeeping is not due in these rounds
    node.next_housekeeping, node.next_link_check = t + 0.5, t + 0.5
    node.kernel_fast = None
    written = []
    for k in range(5):  # a new connection a round, each one event at least
        fw1.process(tcp(sport=41000 + k, dport=80, flags="S"), OUTSIDE, t + k * 0.001)
        node.end_round(t + k * 0.001)
        written.append(node.events.written)
    assert written[0] >= 1 and all(b > a for a, b in zip(written, written[1:])), written
    assert not fw1.events and not node.events.pending
