"""The firewall node process: a bump in the wire around the gateway engine.

It reads frames from the outside and inside interfaces with packet sockets,
asks the gateway engine for a verdict, and sends accepted frames out of the
other interface; it carries the sync engine's messages on the sync network,
answers the control socket (nodes/shell/control.py) and writes the engines'
events (new, destroy, expect, drop, membership) as JSON lines. I/O only.

A packet's path: ``Node.pump`` (here) -> ``GatewayEngine.process``
(nodes/engine.py) -> ``ConnectionTable`` and ``RuleSet`` (nodes/conntrack.py,
nodes/rules.py) -> the verdict, back here.
"""
from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import select
import signal
import socket
import sys
import time

from nodes.conntrack import Timeouts
from nodes.delayline import DelayLine
from nodes.engine import ACCEPT, INSIDE, OUTSIDE, GatewayEngine
from nodes.home import HomeForwarder
from nodes.observe.client import socket_path
from nodes.rules import RuleError, RuleSet
from nodes.settings import DEFAULT, SettingsError
from nodes.shell import config as cluster_config
from nodes.shell.control import answer, dump_parts, stats_parts
from nodes.shell.control_server import ControlServer
from nodes.shell.deathwatch import DeathWatch
from nodes.shell.events import EventLog
from nodes.shell.fastpath import FastPathUnavailable, KernelFastPath
from nodes.shell.ports import by_ethertype, link_up, open_port
from nodes.sync import SyncEngine
from nodes.syncproto import GROUP, HOME_ANSWER, HOME_QUERY, MULTICAST, PORT, death_notice

BATCH = 256  # frames read from one port before looking at the others
HOUSEKEEPING = 0.5  # seconds between expiry sweeps and event flushes


FASTPATH_TICK = 0.005  # seconds between looks at connections waiting to be offloaded
FASTPATH_READ = 1.0  # seconds between reads of the fast path's counters
SYNC_TICK = 0.005  # seconds between retransmission checks while something is unacknowledged
# Work in one round of the loop is bounded, so that heartbeats leave on time also
# when the node is flooded and shares its CPU (dead_after is 100 ms by default):
SYNC_BUDGET = 0.01  # seconds of reading the sync socket in one go at most
ACK_EVERY = 0.001  # seconds of that reading between two rounds of acknowledgements
CONTROL_BUDGET = 0.002  # seconds of a long control answer (dump) between two rounds of packets
EVENT_BUDGET = 0.002  # seconds of writing the event log between two rounds of packets


# Python's automatic full collection comes after every 10 young (gen1) collections,
# once what reached the old generation since the last full one is a quarter of it:
# during a bulk transfer every 70k new objects, each a walk of all that survived
# since the last freeze. Receiving a million entries in process took 24 of them,
# 45 ms each, 1.1 s in all; in a node each is a stop of its packets and heartbeats.
# Survivors are frozen every housekeeping round instead (freeze_survivors), and the
# engines make no reference cycles for a full collection to find.
FULL_COLLECTION_EVERY = 1000  # young collections between two full ones (Python's: 10)


def tune_collector() -> None:
    """The node's garbage collector: young generations as Python's, a full collection
    only every FULL_COLLECTION_EVERY young ones (7M new objects)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def freeze_survivors() -> None:
    """Collect the young generations, then move what survived out of the collector's
    sight (gc.freeze). Python's full collection walks every tracked object: at 16k
    entries a node it stopped the node for 100-300 ms at a time, past dead_after, and
    its peers took it for dead (issue 14). Frozen objects are still freed by reference
    counting; only reference cycles among them would leak, and the engines make none
    (tests/unit/test_sync.py, test_the_engines_make_no_reference_cycles)."""
    gc.collect(1)
    gc.freeze()


class Node:
    """The I/O loop of one firewall node."""

    def __init__(self, engine: GatewayEngine, outside: str, inside: str, control: str,
                 events_path: str | None, ring: bool = True, sync: SyncEngine | None = None,
                 peers: dict[int, str] | None = None, cluster_delay: float = 0.0,
                 query_timeout: float = DEFAULT.query_timeout, fastpath: str | None = None):
        """``fastpath``: "on" or "off" (switched by ``set fastpath=``) to make the
        kernel fast path (nodes/shell/fastpath.py), None for none."""
        self.engine = engine
        self.ports = [open_port(outside, ring), open_port(inside, ring)]
        self.kernel_fast = None
        self.next_fast_read = 0.0
        if fastpath is not None:
            self.kernel_fast = KernelFastPath(outside, inside, 2 * engine.offload.max_connections)
            for port in self.ports:
                by_ethertype(port)
            engine.fastpath = fastpath == "on"
        self.sent = [0, 0]
        self.sync, self.peers = sync, peers or {}
        self.sync_sock = None
        self.next_link_check = 0.0
        self.next_housekeeping = time.monotonic() + HOUSEKEEPING
        self.links_were_up = True
        self.home = None
        # Inter-node latency where the kernel has no netem: every message this
        # node sends on the cluster network waits here first (one-way delay).
        self.delay_line = DelayLine(cluster_delay) if cluster_delay > 0 else None
        if sync is not None and sync.config.mode == "home":
            self.home = HomeForwarder(sync.me, sync.key, sync.boot, query_timeout,
                                      names=sync.names, live_peers=lambda: [
                                          p for p in sync.alive if p != sync.me],
                                      stamp=sync.stamp)
            engine.home = self.home
            sync.on_peer_down.append(self.home.peer_down)
        self.group_sock = None
        if sync is not None:
            self.sync_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sync_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sync_sock.bind((self.peers[sync.me], PORT))
            self.sync_sock.setblocking(False)
        if self.home is not None:
            self.group_sock = self.join_group(self.peers[sync.me])
            self.peers[MULTICAST] = GROUP
        self.control = ControlServer(control, lambda cmd: answer(self, cmd, time.monotonic()),
                                     lambda: dump_parts(engine, time.monotonic()),
                                     {"stats": lambda: stats_parts(self, time.monotonic())})
        self.wall_offset = time.time() - time.monotonic()
        self.events = EventLog(open(events_path, "a", encoding="utf-8") if events_path else None,
                               engine.node, self.wall_offset, engine.max_events)
        self.running = True

    def join_group(self, address: str) -> socket.socket:
        """Send multicast from the sync address; hear the cluster's group (mode home's queries)."""
        here = socket.inet_aton(address)
        self.sync_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, here)
        self.sync_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self.sync_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((GROUP, PORT))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        socket.inet_aton(GROUP) + here)
        sock.setblocking(False)
        return sock

    def run(self) -> None:
        """Forward frames and synchronize state until SIGTERM or SIGINT."""
        fds = {sock.fileno(): (ingress, sock)
               for ingress, port in enumerate(self.ports) for sock in port.rx}
        listening = [s for s in (self.sync_sock, self.group_sock) if s is not None]
        watch = [sock for port in self.ports for sock in port.rx] + listening
        sync_fds = {s.fileno() for s in listening}
        control = self.control
        self.next_housekeeping = time.monotonic() + HOUSEKEEPING
        while self.running:
            ctl_in = control.readers()
            try:
                readable, writable, _ = select.select(
                    watch + ctl_in, control.writers(), [], 0.0 if control.busy else self.timeout())
            except InterruptedError:
                continue
            now = time.monotonic()
            for sock in readable:
                fd = sock.fileno()
                if fd in fds:
                    self.pump(*fds[fd])
                elif fd in sync_fds:
                    self.receive_sync(sock)
                else:
                    control.readable(sock, now)
            for sock in writable:
                control.writable(sock, now)
            control.work(CONTROL_BUDGET)  # a slice of a long answer, then packets again
            self.end_round(time.monotonic())
        self.leave()
        self.collect_events()

    def end_round(self, now: float) -> None:
        """What a round of the loop does after reading: the sync's timers and what it
        has to send, held packets let go, the fast path's changes, housekeeping when
        it is due, and a slice of the event log."""
        if self.sync is not None:
            if now >= self.next_link_check:
                self.check_links(now)
            self.sync.tick(now)
            if self.home is not None:
                self.home.tick(now)
            self.send_sync()  # also lets out what the delay line holds that is due
        if self.engine.held:
            for frame, ingress in self.engine.release(now):
                self.send(1 - ingress, frame)
        if self.kernel_fast is not None:
            self.fastpath_tick(now)
        if now >= self.next_housekeeping:
            self.housekeeping(now)
        # The events of this round, written now: collected every HOUSEKEEPING instead,
        # half a second of them went out in one round of up to EVENT_BUDGET, and an
        # acknowledgement or a held packet waited behind it (lag samples of 2-3.5 ms).
        self.collect_events()
        self.events.write(EVENT_BUDGET)

    def housekeeping(self, now: float) -> None:
        """Every HOUSEKEEPING: expiry (a slice of a large table) and the garbage
        collector's survivors frozen."""
        self.control.expire(now)
        self.engine.expire(now, incremental=True)  # a slice of a large table
        if self.home is not None:
            self.home.expire(now)
        freeze_survivors()
        self.next_housekeeping = now + HOUSEKEEPING

    def leave(self, grace: float = 0.5) -> None:
        """Graceful leave: tell the peers, let them acknowledge what is in flight."""
        if self.sync is None:
            return
        start = time.monotonic()
        self.sync.leave(start)
        while time.monotonic() - start < grace:
            now = time.monotonic()
            self.sync.tick(now)
            self.send_sync()
            readable, _, _ = select.select([self.sync_sock], [], [], SYNC_TICK)
            if readable:
                self.receive_sync(self.sync_sock)
            if (self.sync.idle
                    and (self.delay_line is None or len(self.delay_line) == 0)
                    and now - start > 0.05):
                break

    def check_links(self, now: float) -> None:
        """A node whose outside or inside link is down cannot carry traffic: go offline."""
        self.next_link_check = now + self.sync.config.heartbeat
        up = all(link_up(self.sync_sock, p.ifname) for p in self.ports)
        if up == self.links_were_up:
            return
        self.links_were_up = up
        self.engine.count("link_down" if not up else "link_up")
        self.sync.set_offline(not up, now)

    def fastpath_tick(self, now: float) -> None:
        """Read the kernel's counters into the entries (every FASTPATH_READ, and before
        withdrawn connections' elements go), then make the kernel's changes."""
        offload = self.engine.offload
        if not self.kernel_fast.alive():  # its nft session died, and the table with it
            self.engine.count("fastpath_session_lost")
            said = " ".join(self.kernel_fast.last_words().split())[-300:]
            print(f"fw-node {self.engine.node}: the fast path's nft session ended (exit "
                  f"code {self.kernel_fast.proc.returncode}){': ' + said if said else ''}; "
                  "the fast path is off", file=sys.stderr, flush=True)
            self.engine.fastpath = False
            offload.take(self.engine.sync, now)
            self.kernel_fast = None
            return
        if offload.closing or (offload.offloaded and now >= self.next_fast_read):
            readings = self.kernel_fast.read()
            if readings is not None:
                offload.account(readings, self.engine.table, now, self.engine.idle_timeout)
            self.next_fast_read = now + FASTPATH_READ
        if offload.has_changes():
            adds, removes = offload.take(self.engine.sync, now)
            offload.refused(self.kernel_fast.apply(adds, removes))

    def timeout(self) -> float:
        """How long select may wait: short while packets are held or sync is unacked."""
        if self.engine.held or (self.home is not None and self.home.pending):
            return 0.001
        if self.kernel_fast is not None and self.engine.offload.has_changes():
            return FASTPATH_TICK
        if self.sync is None:
            return HOUSEKEEPING
        due = self.sync.next_heartbeat  # peers take a silent node for a failed one
        if self.sync.periodic_on:
            due = min(due, self.sync.next_periodic)
        leaves = self.delay_line.next_due() if self.delay_line is not None else None
        if leaves is not None:  # a message leaves the delay line
            due = min(due, leaves)
        release = self.sync.next_release()
        if release is not None:  # delayed replication: a connection is old enough
            due = min(due, release)
        wait = max(0.0, min(HOUSEKEEPING, due - time.monotonic()))
        if not self.sync.idle:
            return min(wait, SYNC_TICK)
        return wait

    def receive_sync(self, sock: socket.socket) -> None:
        """Read the messages that have arrived before the peers are judged: a burst of
        records must not leave heartbeats unread behind it (peers were taken for dead
        while theirs waited in the socket). At most SYNC_BUDGET seconds of it; what is
        left is read next round, and judgement waits for it (``SyncEngine.unread``)."""
        now = time.monotonic()
        until, ack_at = now + SYNC_BUDGET, now + ACK_EVERY
        self.sync.unread = False
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            self.sync.receive(data, time.monotonic())
            t = time.monotonic()
            if t >= ack_at:  # what was read so far, acknowledged now: a sender may be
                self.sync.acknowledge()  # holding a packet for a message read early in a
                self._send_all(self.sync.outbox, self.sync.counters)  # long burst
                ack_at = t + ACK_EVERY
            if t >= until:
                self.sync.counters["sync_reads_cut"] += 1
                self.sync.unread = True  # the rest next round; judge peers on it first
                break
        self.sync.flush(now)  # acknowledge at once: the sender may be holding a packet
        self.send_sync()

    def serve_home(self, now: float) -> None:
        """Answer queries, learn homes, and carry packets forwarded to this node."""
        home, engine = self.home, self.engine
        for msg in self.sync.home_inbox:
            if msg.type == HOME_QUERY:
                home.query(msg, engine, now)
            elif msg.type == HOME_ANSWER:
                home.answer(msg, now)
            elif engine.process(msg.frame, msg.ingress, now, forwarded=True) == ACCEPT:
                self.send(1 - msg.ingress, msg.frame)  # FORWARD: as if it arrived there
            for frame, ingress in engine.take_fragments():  # a forwarded datagram, whole
                self.send(1 - ingress, frame)
        self.sync.home_inbox.clear()
        self._send_all(home.outbox, home.counters)

    def send_sync(self) -> None:
        if self.home is not None:
            self.serve_home(time.monotonic())
        self._send_all(self.sync.outbox, self.sync.counters)

    def _send_all(self, outbox: list, counters) -> None:
        """Send (peer, bytes) messages on the sync network; empty the outbox. With a
        delay line they join it, and whatever in it is due leaves."""
        if self.delay_line is not None:
            now = time.monotonic()
            for peer, data in outbox:
                self.delay_line.push(now, (peer, data, counters))
            outbox.clear()
            self._transmit(self.delay_line.due(now))
            return
        self._transmit([(peer, data, counters) for peer, data in outbox])
        outbox.clear()

    def _transmit(self, messages: list) -> None:
        """Hand (peer, bytes, counters) messages to the sync socket."""
        for peer, data, counters in messages:
            try:
                self.sync_sock.sendto(data, (self.peers[peer], PORT))
            except OSError:  # a full queue or an unreachable peer: resend queues retry
                counters["send_errors"] += 1

    def pump(self, ingress: int, sock=None) -> None:
        """Read a batch of frames from one port (its socket ``sock``, default the
        first), act on each verdict, send in one go."""
        rx, tx = self.ports[ingress], self.ports[1 - ingress]
        process, send, now = self.engine.process, tx.send, time.monotonic()
        sent = 0
        if self.sync is not None and not self.sync.ready:
            dropped = len(rx.recv_batch(BATCH, sock))  # no state yet: forwarding would be blind
            self.engine.drops["not_ready"] += dropped
            return
        for frame in rx.recv_batch(BATCH, sock):
            if process(frame, ingress, now) == ACCEPT and send(frame):
                sent += 1
        if self.engine.fragments_out:  # a datagram reassembled and accepted: its fragments
            for frame, _ in self.engine.take_fragments():
                sent += send(frame)
        if self.sync is not None:
            # Write-ahead: the records of what this batch changed (a new connection, a
            # moved TCP window) are handed to the kernel before the batch's frames are.
            # A node killed in between has then sent nothing that its backup does not
            # hear of; the other way round, a host could acknowledge data the backup
            # never heard of, and the backup would refuse that acknowledgement as acking
            # data not seen (bound III): the connection stalled after the takeover.
            self.sync.flush(now)
            self.send_sync()
        self.sent[1 - ingress] += sent - tx.flush()

    def send(self, egress: int, frame: bytes) -> None:
        port = self.ports[egress]
        self.sent[egress] += port.send(frame) - port.flush()

    def collect_events(self) -> None:
        """Move the engines' events to the event log (written a slice at a time)."""
        events = self.engine.drain_events() if self.engine.events else []
        for source in (self.sync, self.home):
            if source is not None and source.events:
                events += source.events
                source.events = []
        if events:  # most rounds make none: this runs every round
            self.events.add(events)

    def close(self) -> None:
        for sock in (*self.ports, self.sync_sock, self.group_sock):
            if sock is not None:
                sock.close()
        if self.kernel_fast is not None:
            self.kernel_fast.close()
        self.control.close()
        self.events.close()


def load_sync(path: str, name: str, engine: GatewayEngine) -> tuple:
    """The sync engine of node ``name`` from the cluster's sync config file."""
    config = cluster_config.load(path)
    me = config.me(name)
    # This incarnation: random, so no clock (a restart with the clock behind was taken
    # for an old incarnation) and no guess lets an old message pass for a new one.
    boot = int.from_bytes(os.urandom(8), "big") >> 1 or 1
    sync = SyncEngine(me, list(config.names), engine.table, config.key, config.settings,
                      config.names, boot=boot, now=time.monotonic(),
                      observer=bool(config.controller))
    peers = dict(config.addresses)
    if config.controller:
        peers[0] = config.controller
    return sync, peers, config.settings.hold_timeout, {
        "cluster_delay": config.cluster_delay, "query_timeout": config.settings.query_timeout}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fw-node", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="node name, e.g. fw1")
    parser.add_argument("--outside", required=True, help="outside interface, e.g. fw1-eth0")
    parser.add_argument("--inside", required=True, help="inside interface, e.g. fw1-eth1")
    parser.add_argument("--rules", required=True, help="rule file (see nodes/rules.py)")
    parser.add_argument("--run-id", default="default", help="names the control socket folder")
    parser.add_argument("--control", help="control socket path (default from --run-id)")
    parser.add_argument("--events", help="append events as JSON lines to this file")
    parser.add_argument("--established-timeout", type=float, default=Timeouts.established)
    parser.add_argument("--time-wait-timeout", type=float, default=Timeouts.time_wait,
                        help="seconds a closed TCP connection's entry stays in TIME_WAIT "
                        "(nf_conntrack_tcp_timeout_time_wait)")
    parser.add_argument("--sync-config", help="JSON file: members, key file and sync settings")
    parser.add_argument("--max-entries", type=int, default=1_000_000,
                        help="the connection table's cap (copies count against it)")
    parser.add_argument("--no-early-drop", action="store_true",
                        help="a full table refuses new connections instead of evicting the "
                             "oldest unassured one")
    parser.add_argument("--no-checksum", action="store_true",
                        help="do not verify checksums (as nf_conntrack_checksum=0)")
    parser.add_argument("--tcp-liberal", action="store_true",
                        help="pass out-of-window TCP segments (nf_conntrack_tcp_be_liberal=1)")
    parser.add_argument("--tcp-loose", action="store_true",
                        help="a bare ACK the rules allow picks a connection up mid-stream "
                             "(nf_conntrack_tcp_loose=1)")
    parser.add_argument("--no-tcp-window-check", action="store_true",
                        help="do not track TCP windows of new connections (OpenWrt's "
                             "nf_conntrack_tcp_no_window_check=1)")
    parser.add_argument("--fastpath", choices=("on", "off"),
                        help="forward established connections in the kernel (nftables "
                             "netdev ingress; off: ready, switched on by 'set fastpath=on')")
    parser.add_argument("--no-ring", action="store_true",
                        help="plain packet sockets instead of PACKET_MMAP rings")
    args = parser.parse_args(argv)
    if args.max_entries < 1:
        parser.error(f"--max-entries {args.max_entries}: the table needs room for 1 entry at least")
    try:
        rules = RuleSet.from_file(args.rules)
    except RuleError as err:
        print(f"fw-node: {err}", file=sys.stderr)
        return 2
    tune_collector()
    engine = GatewayEngine(args.name, rules, Timeouts(established=args.established_timeout,
                                                    time_wait=args.time_wait_timeout),
                           checksum=not args.no_checksum, max_entries=args.max_entries,
                           early_drop=not args.no_early_drop, tcp_liberal=args.tcp_liberal,
                           tcp_loose=args.tcp_loose,
                           tcp_window_check=not args.no_tcp_window_check)
    sync, peers, link = None, None, {}
    if args.sync_config:
        try:
            sync, peers, hold_timeout, link = load_sync(args.sync_config, args.name, engine)
        except (OSError, ValueError, KeyError, SettingsError) as err:
            print(f"fw-node: bad sync config {args.sync_config}: {err}", file=sys.stderr)
            return 2
        engine.sync, engine.hold_timeout = sync, hold_timeout
    control = args.control or socket_path(args.run_id, args.name)
    watcher = None
    if sync is not None and sync.config.death_notice:
        watcher = DeathWatch(args.name, death_notice(sync.me, sync.boot, sync.key),
                             peers[sync.me], [(a, PORT) for i, a in peers.items()
                                              if i != sync.me],
                             link.get("cluster_delay", 0.0), args.events)
    try:
        node = Node(engine, args.outside, args.inside, control, args.events, not args.no_ring,
                    sync, peers, fastpath=args.fastpath, **link)
    except (FastPathUnavailable, OSError) as err:
        if watcher is not None:
            watcher.disarm()  # it never ran: nobody heard of this incarnation
        print(f"fw-node: {err}" if isinstance(err, FastPathUnavailable) else
              f"fw-node: cannot open interfaces {args.outside}/{args.inside}: {err.strerror}"
              " (run inside the firewall host, as root)", file=sys.stderr)
        return 2

    def stop(_signum, _frame):
        node.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID prints every thread's stack to the log
    print(f"fw-node {args.name}: forwarding {args.outside} <-> {args.inside} "
          f"({node.ports[0].kind} ports), "
          f"{len(rules.rules)} rules, control {control}", flush=True)
    left = False
    try:
        node.run()
        left = True  # it said goodbye (Node.leave)
    finally:
        node.close()
        if watcher is not None and left:
            watcher.disarm()
    # Not disarmed (an exception, or SIGKILL before this): when this process
    # ends, the watcher sends the death notice.
    return 0


if __name__ == "__main__":
    sys.exit(main())
