"""A simulated cluster for unit tests: gateway engines with sync engines on a fake network."""
import random

from nodes.engine import GatewayEngine
from nodes.rules import RuleSet
from nodes.settings import SyncSettings
from nodes.sync import SyncEngine

KEY = b"cluster key for unit tests, 32 by"
RULES = RuleSet.from_text("10.0.0.0/25 10.0.0.192/26 tcp 21 accept helper=ftp\n"
                          "10.0.0.0/25 10.0.0.192/26 tcp 80 accept")


class Net:
    """N nodes: gateway engines with sync engines, joined by a lossy fake network."""

    def __init__(self, n=3, loss=0.0, reorder=False, dup=False, seed=1, **config):
        self.rnd = random.Random(seed)
        self.loss, self.reorder, self.dup = loss, reorder, dup
        self.t = 0.0
        self.fw, self.sync = {}, {}
        for i in range(1, n + 1):
            fw = GatewayEngine(f"fw{i}", RULES)
            s = SyncEngine(i, list(range(1, n + 1)), fw.table, KEY, SyncSettings(**config), boot=100)
            fw.sync = s
            self.fw[i], self.sync[i] = fw, s
        self.wire = []
        self.down = set()  # nodes that neither send, receive nor tick (crashed)
        self.run()  # the start-up exchange (bulk requests) settles before any traffic

    def run(self, seconds=0.0, step=0.005, settle=True):
        """Deliver and tick until ``seconds`` pass and (``settle``) all is acknowledged."""
        end = self.t + seconds
        while True:
            for i, s in self.sync.items():
                if i in self.down:
                    s.outbox.clear()
                    continue
                s.tick(self.t)
                for peer, data in s.outbox:
                    if self.rnd.random() >= self.loss:
                        self.wire.append((peer, data))
                        if self.dup:
                            self.wire.append((peer, data))
                s.outbox.clear()
            if self.reorder:
                self.rnd.shuffle(self.wire)
            wire, self.wire = self.wire, []
            for peer, data in wire:
                if peer not in self.down:
                    self.sync[peer].receive(data, self.t)
            busy = any(ch.ack_due or ch.unacked or ch.pending
                       for i, s in self.sync.items() if i not in self.down
                       for p, ch in s.channels.items() if p in s.alive)
            if self.t >= end and (not settle or not self.wire and not busy):
                return
            self.t += step

    def entries(self, i):
        return {e.orig: e.owner for e in self.fw[i].table.entries()}
