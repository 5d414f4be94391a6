"""Sync benchmarks: memory per entry, bulk transfer, replication lag, hold time.

- sync_memory: tracemalloc over 100k entries in a connection table.
- sync_bulk: a node owning 100k entries answers a joining backup's bulk
  request; time until the newcomer is ready with every entry (both sync
  engines in this process, messages handed over directly: protocol cost only).
- sync_lag: two node processes in namespaces, joined by a veth sync link
  (UDP, HMAC, acks); crafted FTP control connections cross node 1, whose
  227 replies are held until node 2 acknowledges the expectation. Reports
  node 1's replication lag (state change -> acknowledgement) and hold time.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc

from nodes.conntrack import ConnectionTable
from nodes.observe.client import ask
from nodes.packet import key_tuple, make_key
from nodes.samples import percentiles
from topo.addresses import offload_args
from topo.procs import Proc, wait_until

N_ENTRIES = 100_000


def _keys(n: int) -> list[bytes]:
    return [make_key(6, (0x0A000000 + i).to_bytes(4, "big"), 1024 + i % 60000,
                     (0x0A640000 + i % 250).to_bytes(4, "big"), 80) for i in range(n)]


def memory_per_entry(n: int) -> tuple[float, float]:
    """Bytes per entry of a table of ``n`` established connections: the table's own
    structures (entries, index), and with the keys (tuples, addresses, ports)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        keys = _keys(n)
        table = ConnectionTable(max_entries=max(n, 1))
        after_keys = tracemalloc.get_traced_memory()[0]
        for key in keys:
            table.new_entry(key, "ESTABLISHED", 0.0, "fw1")
        end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (end - after_keys) / n, (end - base) / n


def tracked_memory_per_entry(n: int) -> float:
    """Bytes per entry, key included, of a table of ``n`` TCP connections as a node
    holds them after some traffic: each made by the gateway engine from its handshake,
    two 1448-byte segments and an acknowledgement (``experiments.bench.tcp_stream``,
    its addresses and ports made the connection's own), so with its window state, its
    counters and its times, and the key's objects those of its first packet."""
    import random
    import struct

    from experiments.bench import tcp_stream
    from experiments.synfill import FILL_PREFIX, fill_key
    from nodes.engine import OUTSIDE, GatewayEngine
    from nodes.rules import RuleSet
    server = bytes((10, 9, 0, 2))
    template = tcp_stream(random.Random(16), 2, server=server)
    rules = RuleSet.from_text(f"{FILL_PREFIX} 10.9.0.2 tcp 5201 accept\n")
    # checksums not verified: the frames are the template's with another client's
    # address and port written in
    engine = GatewayEngine("fw1", rules, max_entries=n, max_events=0, checksum=False)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            src, sport = fill_key(i)
            now = 1.0 + i * 1e-5
            for frame, port in template:
                out = port == OUTSIDE
                f = bytearray(frame)
                f[26 if out else 30:30 if out else 34] = src
                struct.pack_into("!H", f, 34 if out else 36, sport)
                engine.process(bytes(f), port, now)
        end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    if len(engine.table) != n or engine.drops:
        raise RuntimeError(f"tracked_memory_per_entry: {len(engine.table)} of {n} entries, "
                           f"drops {dict(engine.drops)}")
    return (end - base) / n


def sync_memory(seconds: float, out_dir: str) -> dict:
    """Bytes per entry: the table's own structures, and with the keys; and an entry as
    the engine holds a TCP connection after traffic (window tracked, counters)."""
    table, with_key = memory_per_entry(N_ENTRIES)
    return {"sync_memory_per_entry_table": (table, "bytes"),
            "sync_memory_per_entry_with_key": (with_key, "bytes"),
            "sync_memory_per_tcp_entry_after_traffic": (tracked_memory_per_entry(N_ENTRIES),
                                                        "bytes, key included")}


def _engine(me: int, n: int, key: bytes, config) -> object:
    """fw``me``'s sync engine, beside fw1 or fw2, with room for ``n`` entries; fw1 owns
    ``n`` established connections (made before it, so nothing is queued for them)."""
    from nodes.sync import SyncEngine
    table = ConnectionTable(max_entries=max(n, 1))
    if me == 1:
        for k in _keys(n):
            table.new_entry(k, "ESTABLISHED", 0.0, "fw1")
    return SyncEngine(me, [1, 2], table, key, config, boot=me, now=0.0)


def collecting_as_a_node(run):
    """``run`` with the garbage collector's thresholds as a node sets them
    (tune_collector), then back as they were."""
    @functools.wraps(run)
    def as_a_node(*args, **kw):
        from nodes.shell.node import tune_collector
        thresholds = gc.get_threshold()
        tune_collector()
        try:
            return run(*args, **kw)
        finally:
            gc.set_threshold(*thresholds)
    return as_a_node


@collecting_as_a_node
def bulk_transfer(n: int) -> tuple[float, int, int]:
    """A node owning ``n`` entries answers a joining backup's bulk request, in process:
    seconds until the newcomer is ready with every entry, messages, bytes. The garbage
    collector runs as in a node: its thresholds (``tune_collector``), and survivors
    frozen every housekeeping round (without freezing, its full collections walk every
    entry made so far: 1M took 4% longer here)."""
    from nodes.shell.node import HOUSEKEEPING, freeze_survivors
    from nodes.sync import SyncSettings
    key = os.urandom(32)
    config = SyncSettings(mode="ondemand", bulk_timeout=600.0)
    a = _engine(1, n, key, config)
    limit = 120 + n / 10_000  # seconds: far beyond what it takes
    start = time.perf_counter()
    b = _engine(2, n, key, config)
    now, housekeeping = 0.0, start + HOUSEKEEPING
    while not (b.ready and len(b.table) == n):
        if time.perf_counter() >= housekeeping:
            freeze_survivors()
            housekeeping = time.perf_counter() + HOUSEKEEPING
        for src, dst in ((b, a), (a, b)):
            src.tick(now)
            for _, data in src.outbox:
                dst.receive(data, now)
            src.outbox.clear()
        now += 0.001
        if time.perf_counter() - start > limit:
            raise RuntimeError(f"bulk transfer of {n} entries did not finish in {limit:.0f} s")
    return time.perf_counter() - start, a.counters["messages_sent"], a.counters["bytes_sent"]


def hold_behind_bulk(n: int, share: float = 0.25) -> tuple[float, bool, int]:
    """fw1 answers fw2's bulk request for ``n`` entries; once fw2 holds ``share`` of
    them, fw1's FTP helper announces a data connection and holds its packet (method
    800). In process, and paced as nodes are: fw1 packs PACK_BUDGET records a round,
    fw2 reads SYNC_BUDGET seconds of messages a round, then acknowledges (so messages
    pile up in flight, as between two nodes). Returns the milliseconds from the
    request until its ticket is done, whether fw2 held the expectation by then, and
    how many records fw2 applied in between (what the held packet waited behind)."""
    from nodes.conntrack import Expectation
    from nodes.shell.node import SYNC_BUDGET
    from nodes.sync import SyncSettings
    key = os.urandom(32)
    config = SyncSettings(mode="ondemand", bulk_timeout=600.0, hold=True)
    a, b = _engine(1, n, key, config), _engine(2, n, key, config)
    t1, t2 = a.table, b.table
    wire: list[bytes] = []  # fw1 to fw2, not yet read
    now, ticket, start, applied = 0.0, None, 0.0, 0
    while True:
        a.tick(now)
        wire.extend(data for _, data in a.outbox)
        a.outbox.clear()
        until, read = time.perf_counter() + SYNC_BUDGET, 0
        for data in wire:  # fw2's receive_sync: a budget of reading, then its acks
            b.receive(data, now)
            read += 1
            if time.perf_counter() >= until:
                break
        del wire[:read]
        b.flush(now)
        b.tick(now)
        for _, data in b.outbox:
            a.receive(data, now)
        b.outbox.clear()
        if ticket is None and len(t2) >= share * n:
            master = _keys(1)[0]
            _, client, _, server, _ = key_tuple(master)
            exp = Expectation(6, client, server, 50000, master, now, now + 300.0, "fw1")
            t1.expect(exp)
            a.state_changed("expect", exp, now)
            applied = b.counters["records_applied"]
            start = time.perf_counter()
            ticket = a.request_sync("ftp_data_announced", [exp], now)
        elif ticket is not None and a.done(ticket, now):
            took = (time.perf_counter() - start) * 1e3
            return took, t2.n_expectations == 1, b.counters["records_applied"] - applied
        now += 0.001
        if now > 600:
            raise RuntimeError(f"hold behind a bulk transfer of {n}: never done")


def sync_bulk(seconds: float, out_dir: str) -> dict:
    """100k entries to a joining backup node, in process; a hold during it."""
    took, messages, sent = bulk_transfer(N_ENTRIES)
    held, arrived, ahead = hold_behind_bulk(N_ENTRIES)
    return {"sync_bulk_100k_entries": (took, "s"),
            "sync_bulk_100k_messages": (messages, "messages"),
            "sync_bulk_100k_bytes_per_entry": (sent / N_ENTRIES, "bytes"),
            "sync_hold_behind_bulk_100k": (held, "ms"),
            "sync_hold_behind_bulk_records_ahead": (ahead, "records"),
            "sync_hold_behind_bulk_released_without_state": (0 if arrived else 1, "holds")}


# -- lag and hold between two node processes ------------------------------------
NS = ("fws-a", "fws-n1", "fws-n2", "fws-b")
CLIENT, SERVER = "10.8.0.1", "10.8.0.201"
MAC_C, MAC_S = "02:00:00:00:0a:01", "02:00:00:00:0a:02"  # nobody's: kernels ignore them


def _sh(*cmd: str, ns: str | None = None) -> None:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    subprocess.run(full, check=True, capture_output=True)


def _teardown() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _veth(a: str, ns_a: str, b: str, ns_b: str) -> None:
    _sh("ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b)
    for ns, intf in ((ns_a, a), (ns_b, b)):
        _sh(*offload_args(intf), ns=ns)
        _sh("ip", "link", "set", intf, "up", ns=ns)


def _build() -> None:
    """a --- n1 --- b carry traffic; n1 --- n2 is the sync link; n2 has idle data ports."""
    _teardown()
    for ns in NS:
        _sh("ip", "netns", "add", ns)
        _sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
    _veth("a0", "fws-a", "n1o", "fws-n1")
    _veth("n1i", "fws-n1", "b0", "fws-b")
    _veth("n1s", "fws-n1", "n2s", "fws-n2")
    _veth("n2o", "fws-n2", "n2i", "fws-n2")
    _sh("ip", "addr", "add", "10.9.1.1/24", "dev", "n1s", ns="fws-n1")
    _sh("ip", "addr", "add", "10.9.1.2/24", "dev", "n2s", ns="fws-n2")


INJECT = r'''
import socket, struct, sys, time
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
side, count, rate, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[5])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[4], 0))
C, S, MC, MS = "{C}", "{S}", "{MC}", "{MS}"
def out(sport, flags, seq, ack, data=b""):
    return bytes(Ether(src=MC, dst=MS)/IP(src=C, dst=S)/TCP(sport=sport, dport=21, flags=flags, seq=seq, ack=ack)/data)
def inn(sport, flags, seq, ack, data=b""):
    return bytes(Ether(src=MS, dst=MC)/IP(src=S, dst=C)/TCP(sport=21, dport=sport, flags=flags, seq=seq, ack=ack)/data)
def at(t):  # sleep until t on the shared schedule
    time.sleep(max(0.0, t - time.time()))
# every frame is built before the first leaves: building one takes scapy a few hundred
# microseconds, on the core that the second node shares, when the node has a message
# to read and acknowledge (its acknowledgements waited up to a millisecond behind it)
frames = []  # (offset in the schedule, frame), in order
for i in range(count):  # SYN, SYN/ACK, ACK, 227: ``gap`` apart, whoever sends them
    sport, t = 20000 + i, i / rate
    if side == "a":
        frames += [(t, out(sport, "S", 100, 0)), (t + 2 * gap, out(sport, "A", 101, 501))]
    else:
        port = 50000 + i % 10000
        frames += [(t + gap, inn(sport, "SA", 500, 101)),
                   (t + 3 * gap, inn(sport, "PA", 501, 101,
                    b"227 Entering Passive Mode (10,8,0,201,%d,%d).\r\n" % (port // 256, port % 256)))]
print("ready", flush=True)
start = float(sys.stdin.readline())  # both sides keep one schedule from one start
for t, frame in frames:
    at(start + t); s.send(frame)
'''.replace("{C}", CLIENT).replace("{S}", SERVER).replace("{MC}", MAC_C).replace("{MS}", MAC_S)


class Pair(dict):
    """Two node processes' control sockets by name; ``restart(name)`` kills one
    (SIGKILL) and starts it again, a new incarnation, without waiting for it."""

    def __init__(self, socks: dict, procs: dict, start):
        super().__init__(socks)
        self.procs, self._start = procs, start

    def restart(self, name: str) -> None:
        proc = self.procs[name]
        proc.popen.kill()
        proc.popen.wait()
        if os.path.exists(self[name]):
            os.unlink(self[name])
        self.procs[name] = self._start(name)


@contextlib.contextmanager
def node_pair(out_dir: str, rules: str, settings: dict, tag: str = "sync-bench"):
    """fw1 and fw2, node processes in their namespaces (fw1 on core 1, fw2 on core 0),
    joined by the sync link, both ready; yields their control sockets by name (a Pair)."""
    _build()
    procs = {}
    try:
        paths = {kind: os.path.join(out_dir, f"{tag}.{kind}") for kind in ("rules", "key", "json")}
        with open(paths["rules"], "w") as fh:
            fh.write(rules)
        with open(paths["key"], "wb") as fh:
            fh.write(os.urandom(32))
        with open(paths["json"], "w") as fh:
            json.dump({"names": {"1": "fw1", "2": "fw2"},
                       "addresses": {"1": "10.9.1.1", "2": "10.9.1.2"},
                       "key_file": paths["key"], "settings": settings}, fh)
        tmp = tempfile.mkdtemp(prefix="fwsync-")
        where = {"fw1": ("fws-n1", "n1o", "n1i", "1"), "fw2": ("fws-n2", "n2o", "n2i", "0")}
        socks = {name: os.path.join(tmp, f"{name}.sock") for name in where}

        def start(name):
            ns, o, i, cpu = where[name]
            return Proc(name, ["ip", "netns", "exec", ns, "taskset", "-c", cpu,
                               sys.executable, "-m", "nodes.shell.node", "--name", name,
                               "--outside", o, "--inside", i, "--rules", paths["rules"],
                               "--control", socks[name], "--sync-config", paths["json"],
                               "--events", os.path.join(out_dir, f"{tag}-{name}.events")],
                        os.path.join(out_dir, f"{tag}-{name}.log"))
        for name in where:
            procs[name] = start(name)

        def joined(n):  # ready, and online: a veth's carrier can come up late (~1 s)
            sync = ask(socks[n], "stats")["sync"] if os.path.exists(socks[n]) else {}
            return sync.get("ready") and not sync["offline"] and sync["alive"] == [1, 2]
        for name in socks:
            wait_until(lambda n=name: joined(n), 10, f"{name} ready and online, with its peer")
        yield Pair(socks, procs, start)  # its restarts replace procs' entries
    finally:
        for p in procs.values():
            p.stop()
        _teardown()


def ftp_injectors(count: int, rate: float = 200.0, gap: float = 0.001) -> list:
    """The two injectors of ``count`` FTP control connections at ``rate`` a second, a
    connection's SYN, SYN/ACK, ACK and 227 ``gap`` seconds apart, started and waiting
    for ``go``."""
    senders = [subprocess.Popen(["ip", "netns", "exec", ns, "taskset", "-c", "0",
                                 sys.executable, "-c", INJECT, side, str(count), str(rate), intf,
                                 str(gap)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for side, ns, intf in (("a", "fws-a", "a0"), ("b", "fws-b", "b0"))]
    for p in senders:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("sync bench: an FTP injector did not start (see its stderr)")
    return senders


def go(senders: list, count: int) -> None:
    """Start both injectors on one schedule, and wait until they are done.

    The two sides' packets interleave (SYN, SYN/ACK, ACK, 227) only if they keep one
    schedule: started apart (scapy's import alone takes a second), b's SYN/ACK and
    227 came before a's SYN, and 1 of 1000 replies was held (make bench, 9a9acb8)."""
    start = time.time() + 0.1
    for p in senders:
        p.stdin.write(f"{start}\n")
        p.stdin.close()
    for p in senders:
        p.wait(timeout=60 + count / 100)
    time.sleep(0.2)


def _hold_figures(name: str, hold: dict, count: int) -> dict:
    """The hold figures, left out when fewer than 90% of the replies were held."""
    if hold.get("n", 0) < 0.9 * count:  # the figures would describe a few packets only
        print(f"{name}: only {hold.get('n', 0)} of {count} announcing replies were held: "
              "the hold figures are left out (see the node's events)", file=sys.stderr)
        return {"n": hold.get("n", 0)}
    return hold


def sync_lag(seconds: float, out_dir: str) -> dict:
    """Replication lag and hold time at node 1, with node 2 acknowledging over UDP."""
    with node_pair(out_dir, f"{CLIENT} {SERVER} tcp 21 accept helper=ftp\n",
                   {"mode": "ondemand", "hold": True, "replication": "full"}) as socks:
        count = max(50, int(200 * seconds))
        go(ftp_injectors(count), count)
        stats = ask(socks["fw1"], "stats")
    sync, hold = stats["sync"], _hold_figures("sync_lag", stats["hold_ms"], count)
    return {"sync_lag_p50": (sync["lag_ms_p50"], "ms"), "sync_lag_p99": (sync["lag_ms_p99"], "ms"),
            "sync_hold_p50": (hold.get("p50"), "ms"), "sync_hold_p99": (hold.get("p99"), "ms"),
            "sync_holds": (hold.get("n", 0), "held packets"),
            "sync_holds_timed_out": (stats["counters"].get("holds_timed_out", 0), "held packets")}


BULK_FILL = 200_000  # connections fw1 holds when fw2 restarts and asks for them


def sync_hold_during_bulk(seconds: float, out_dir: str) -> dict:
    """The hold between two node processes while one answers the other's bulk request:
    fw1 admits BULK_FILL connections (synfill's SYNs, replicated in full to fw2);
    fw2 is killed and started again, and asks fw1 for all of them; as soon as fw1
    has it back in its view, FTP control connections cross fw1 at 100 a second,
    and each 227 is held until fw2 acknowledges its expectation, behind the bulk
    answer that fw1 is sending it. Hold times at fw1; fw2's bulk transfer; fw1's
    resends (the whole run: the fill too) and failures taken for real that were not
    (either node taking the other for dead, the kill aside). Both nodes' stats and
    fw1's hold samples go to hold-bulk-stats.json."""
    from experiments.bench_scaling import settled_entries
    from experiments.synfill import FILL_DPORT, FILL_PREFIX
    rules = (f"{CLIENT} {SERVER} tcp 21 accept helper=ftp\n"
             f"{FILL_PREFIX} {SERVER} tcp {FILL_DPORT} accept\n")
    count = max(50, int(100 * min(seconds, 2.0)))
    with node_pair(out_dir, rules, {"mode": "ondemand", "hold": True, "replication": "full"},
                   tag="hold-bulk") as pair:
        subprocess.run(["ip", "netns", "exec", "fws-a", "taskset", "-c", "0", sys.executable,
                        "-m", "experiments.synfill", "--intf", "a0", "--dst", SERVER,
                        "--count", str(BULK_FILL), "--rate", "25000"],
                       check=True, capture_output=True)
        filled = settled_entries(pair["fw1"])
        # 100 a second, 2 ms apart: fw1, busy with the bulk answer, reads its ports a
        # batch at a time, and at 1 ms one side's SYN/ACK came before the other's SYN
        # (tcp_no_entry) for up to 15% of the connections
        senders = ftp_injectors(count, rate=100.0, gap=0.002)
        pair.restart("fw2")
        wait_until(lambda: ask(pair["fw1"], "members")["alive"] == [1, 2], 20,
                   "fw1 to take the restarted fw2 back")
        behind = filled - settled_entries(pair["fw2"], timeout=0.0) \
            if os.path.exists(pair["fw2"]) else filled
        go(senders, count)
        wait_until(lambda: os.path.exists(pair["fw2"])
                   and ask(pair["fw2"], "members")["ready"], 60, "fw2 ready")
        stats, joined = ask(pair["fw1"], "stats", timeout=30), ask(pair["fw2"], "stats", timeout=30)
        with open(os.path.join(out_dir, "hold-bulk-stats.json"), "w") as fh:
            json.dump({"fw1": stats, "fw2": joined, "fw1_raw": ask(pair["fw1"], "raw")}, fh)
    hold = _hold_figures("sync_hold_during_bulk", stats["hold_ms"], count)
    bulk, sent = joined["sync"], stats["sync"]["counters"]
    return {"sync_hold_during_bulk_p50": (hold.get("p50"), "ms"),
            "sync_hold_during_bulk_p99": (hold.get("p99"), "ms"),
            "sync_hold_during_bulk_held": (hold.get("n", 0), "held packets"),
            "sync_hold_during_bulk_timed_out": (stats["counters"].get("holds_timed_out", 0),
                                                "held packets"),
            "sync_hold_during_bulk_entries": (filled, "entries"),
            "sync_hold_during_bulk_missing_at_start": (behind, "entries"),
            "sync_hold_during_bulk_transfer": (bulk["bulk_ms_last"], "ms"),
            "sync_hold_during_bulk_resends": (sent.get("retransmissions", 0), "messages"),
            # fw1 fails fw2 once, when it is killed; any other failure is a false one
            "sync_hold_during_bulk_false_failures": (
                sent.get("peers_failed", 0) - 1 + bulk["counters"].get("peers_failed", 0),
                "failures")}


# -- the same for kernel nodes: conntrack's events in both namespaces ---------------
SYN_PACED = r'''
import socket, sys, time
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
src_mac, dst_mac, src, dst, intf, count, rate = sys.argv[1:8]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((intf, 0))
frames = [bytes(Ether(src=src_mac, dst=dst_mac) / IP(src=src, dst=dst)
                / TCP(sport=20000 + i, dport=21, flags="S")) for i in range(int(count))]
start = time.monotonic()
for i, frame in enumerate(frames):
    sock.send(frame)
    time.sleep(max(0.0, start + (i + 1) / float(rate) - time.monotonic()))
print("sent", flush=True)
'''
_EVENT = __import__("re").compile(r"^\[(\d+\.\d+)\].*?sport=(\d+) dport=21\b")


def new_events(path: str) -> dict[tuple[int, bool], float]:
    """``conntrack -E -o timestamp`` NEW lines: {(source port, injected): time}, where
    injected means conntrackd put it there ([USERSPACE] ... progname=conntrackd)."""
    out = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = _EVENT.match(line)
            if m:
                out.setdefault((int(m.group(2)), "progname=conntrackd" in line),
                               float(m.group(1)))
    return out


def sync_lag_kernelnode(seconds: float, out_dir: str) -> dict:
    """Two kernel nodes, conntrackd FT-FW writing what it receives straight into the
    kernel (external cache off, so arrival is visible): crafted SYNs to port 21
    through the cluster; for each, the time from the NEW event in its owner's
    kernel to the NEW event in the other node's (conntrackd injected it). Both
    from ``conntrack -E -o timestamp`` on one clock. This is one way, into the
    backup's table; the Python figure (sync_lag) is the owner's change to the
    backup's acknowledgement back at the owner, a round trip."""
    from topo.addresses import client_ip, client_mac, server_ip, server_mac
    from topo.net import Cluster
    run_dir = os.path.join(out_dir, "sync-lag-kernel")
    count = max(100, int(100 * seconds))
    with Cluster(run_dir, "experiments/rules/ftp.rules", n=2, sync={"mode": "ondemand"},
                 node="kernel", external_cache=False,
                 run_id=f"fwl-bench-{os.getpid()}") as cluster:
        for name in cluster.node_names():
            cluster.spawn(f"events-{name}", ["stdbuf", "-oL", "conntrack", "-E", "-e", "NEW",
                                             "-o", "timestamp", "-p", "tcp", "--dport", "21"],
                          host=cluster.net[name])
        time.sleep(0.5)  # conntrack -E subscribes; it has no readiness signal
        sender = cluster.spawn("syns", [sys.executable, "-c", SYN_PACED, client_mac(1),
                                        server_mac(1), client_ip(1), server_ip(1), "c1-eth0",
                                        str(count), "100"], host=cluster.net["c1"])
        wait_until(lambda: not sender.alive(), 30 + count / 50, "the SYNs")
        time.sleep(0.5)  # the last replications
        seen = {name: new_events(cluster.procs[f"events-{name}"].log_path)
                for name in cluster.node_names()}
    events = {k: t for node in seen.values() for k, t in node.items()}
    lags = [events[port, True] - events[port, False] for port, injected in events
            if not injected and (port, True) in events]  # seconds, owner -> backup
    p = percentiles(lags)
    return {"sync_lag_p50_kernelnode": (p.get("p50"), "ms"),
            "sync_lag_p99_kernelnode": (p.get("p99"), "ms"),
            "sync_lag_replicated_kernelnode": (100.0 * len(lags) / count, "% of connections")}
