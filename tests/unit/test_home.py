"""Forwarding to the home node between simulated nodes (the second seed)."""
from nodes import syncproto as sp
from nodes.engine import ACCEPT, ASK, DROP, INSIDE, OUTSIDE, GatewayEngine
from nodes.home import HomeForwarder
from nodes.rules import RuleSet
from tests.unit.frames import CLIENT, SERVER, tcp

KEY = b"cluster key for home tests"
RULES = RuleSet.from_text("10.0.0.0/25 10.0.0.192/26 tcp 21 accept helper=ftp\n"
                          "10.0.0.0/25 10.0.0.192/26 tcp 80 accept")


class Home:
    """Three nodes in mode home, and a fake cluster network that delivers at once."""

    def __init__(self, n=3):
        self.fw = {i: GatewayEngine(f"fw{i}", RULES) for i in range(1, n + 1)}
        self.down = set()
        self.home = {i: HomeForwarder(i, KEY, boot=1, live_peers=lambda i=i: [
            p for p in self.fw if p != i and p not in self.down]) for i in self.fw}
        for i, fw in self.fw.items():
            fw.home = self.home[i]
        self.out = {i: [] for i in self.fw}  # frames each node sent out of a data port
        self.sent = []  # (from, to) of every cluster message; to may be MULTICAST
        self.t = 0.0

    def packet(self, i, frame, ingress):
        """``frame`` arrives at node i; forward, query and deliver until all is quiet."""
        self._handle(i, frame, ingress)
        self.settle()

    def _handle(self, i, frame, ingress):
        verdict = self.fw[i].process(frame, ingress, self.t)
        if verdict == ACCEPT:
            self.out[i].append(frame)
        elif verdict == ASK:
            assert self.home[i].pending or self.home[i].outbox  # the engine handed it over
        return verdict

    def settle(self):
        while any(h.outbox for h in self.home.values()):
            for i, h in self.home.items():
                wire, h.outbox = h.outbox, []
                for to, data in wire:
                    self.sent.append((i, to))
                    group = [p for p in self.fw if p != i] if to == sp.MULTICAST else [to]
                    for peer in group:
                        if peer not in self.down:
                            self.deliver(peer, sp.decode(data, KEY))

    def deliver(self, peer, msg):
        if msg.type == sp.HOME_QUERY:
            self.home[peer].query(msg, self.fw[peer], self.t)
        elif msg.type == sp.HOME_ANSWER:
            self.home[peer].answer(msg, self.t)
        elif msg.type == sp.FORWARD:
            if self.fw[peer].process(msg.frame, msg.ingress, self.t, forwarded=True) == ACCEPT:
                self.out[peer].append(msg.frame)


def test_the_first_node_is_home_and_others_forward_to_it():
    net = Home()
    net.packet(1, tcp(dport=80, flags="S"), OUTSIDE)  # fw1 sees the SYN: it is home
    assert len(net.fw[1].table) == 1 and net.out[1]
    synack = tcp(SERVER, CLIENT, 80, 40000, "SA", 5000, 1001)
    net.packet(2, synack, INSIDE)  # the reply is steered to fw2
    assert net.out[1][-1] == synack and not net.out[2]  # fw1 sent it on
    assert len(net.fw[2].table) == 0  # unreplicated
    h2 = net.home[2]
    assert h2.counters["queries_sent"] == 1 and h2.counters["answers_received"] == 1
    # one multicast query, one unicast answer, one unicast forward
    assert net.sent == [(2, sp.MULTICAST), (1, 2), (2, 1)]
    net.packet(2, tcp(SERVER, CLIENT, 80, 40000, "A", 5001, 1001), INSIDE)
    assert h2.counters["queries_sent"] == 1 and h2.counters["forward_table_hits"] == 1
    entry = next(iter(net.fw[1].table.entries()))
    assert len(net.out[1]) == 3 and entry.packets == [1, 2]  # both replies tracked at home
    [(_, kind, fields)] = h2.events  # what a student sees in fw2's event log
    assert kind == "home_learned" and fields["home"] == 1 and "sport=40000" in fields["key"]


def test_a_burst_asks_once_and_waits():
    net = Home()
    net.packet(1, tcp(dport=80, flags="S"), OUTSIDE)
    h2 = net.home[2]
    for seq in range(5):  # held back: deliver nothing until all five are in
        net._handle(2, tcp(SERVER, CLIENT, 80, 40000, "A", 5001 + seq, 1001), INSIDE)
    assert h2.counters["queries_sent"] == 1 and len(h2.pending) == 1
    net.settle()
    assert h2.counters["forwarded_packets"] == 5


def test_no_answer_drops_the_packets_after_the_deadline():
    net = Home()
    net._handle(2, tcp(SERVER, CLIENT, 80, 40000, "A", 5001, 1001), INSIDE)  # nobody's
    net.settle()
    h2 = net.home[2]
    h2.tick(0.04)
    assert h2.pending
    h2.tick(0.05)
    assert not h2.pending and h2.counters["dropped_no_home"] == 1
    assert [(k, f["dropped"]) for _, k, f in h2.events] == [("home_unknown", 1)]
    assert net.fw[2].drops == {}  # not a firewall drop: the cluster did not know it


def test_an_ftp_data_connection_goes_to_the_home_of_its_expectation():
    net = Home()
    net.packet(1, tcp(flags="S", seq=1000), OUTSIDE)  # control connection: home fw1
    net.packet(3, tcp(SERVER, CLIENT, 21, 40000, "SA", 5000, 1001), INSIDE)
    net.packet(1, tcp(flags="A", seq=1001, ack=5001), OUTSIDE)
    reply = b"227 Entering Passive Mode (10,0,0,201,195,80).\r\n"
    net.packet(3, tcp(SERVER, CLIENT, 21, 40000, "PA", 5001, 1001, reply), INSIDE)
    assert net.fw[1].table.n_expectations == 1
    data_syn = tcp(CLIENT, SERVER, 41000, 50000, "S")
    net.packet(2, data_syn, OUTSIDE)  # the data connection lands on fw2
    assert net.out[1][-1] == data_syn  # fw1 held the expectation: it is the home
    assert net.fw[1].table.n_expectations == 0 and len(net.fw[1].table) == 2


def test_forward_entries_expire_and_go_with_a_failed_home():
    net = Home()
    net.packet(1, tcp(dport=80, flags="S"), OUTSIDE)
    net.packet(2, tcp(SERVER, CLIENT, 80, 40000, "SA", 5000, 1001), INSIDE)
    h2 = net.home[2]
    assert len(h2.forward) == 1
    h2.peer_down(1)
    assert not h2.forward and h2.counters["forward_entries_home_failed"] == 1
    net.packet(2, tcp(SERVER, CLIENT, 80, 40000, "A", 5001, 1001), INSIDE)
    h2.expire(400.0)
    assert not h2.forward and h2.counters["forward_entries_expired"] == 1


def test_outside_mode_home_a_stray_packet_is_still_dropped():
    fw = GatewayEngine("fw1", RULES)
    assert fw.process(tcp(flags="A", dport=80), OUTSIDE, 0) == DROP


def test_a_flood_of_unknown_packets_makes_no_storm_of_queries():
    """Issue 14: mode home turned policy-denied outside packets into multicast queries
    (18.8x the bytes at 8 nodes), uncounted as drops."""
    net = Home()
    for port in range(3000):
        net.fw[1].process(tcp(sport=port, dport=9, flags="S"), OUTSIDE, 0.5)
    h = net.home[1]
    assert h.counters["queries_sent"] == h.max_queries == 1000
    assert h.counters["dropped_query_rate"] == 2000
    assert net.fw[1].counters["home_asked_policy"] == 3000  # every one counted


def test_a_node_that_asked_nothing_lists_its_counters_at_zero():
    """`counters fw1` in lab D must show queries_sent 0, not leave the line out."""
    from nodes.home import COUNTERS
    fresh = Home(3).home[1]
    assert {name: fresh.counters[name] for name in COUNTERS} == dict.fromkeys(COUNTERS, 0)
    assert set(COUNTERS) <= set(fresh.counters)
