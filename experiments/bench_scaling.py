"""How costs grow with their work: the curves of ``make bench`` (few points) and
``make bench BENCH=scaling`` (more).

- table: iperf3 TCP and 64-byte UDP through one node process (as the dataplane
  benchmark, same veths, same cores) whose connection table holds N other
  connections, real ones: SYNs it admitted, sent first by experiments/synfill.py,
  so that every lookup, every expiry sweep and the memory are those of a table of
  that size.
- bulk: a node owning N entries answers a joining backup's bulk request, in
  process (experiments/bench_sync.bulk_transfer): protocol and engine cost only.
- memory: bytes per entry of a table of N established connections, keys included
  (tracemalloc, experiments/bench_sync.memory_per_entry).
- adopt: three sync engines in process, the first owning N connections that the
  second backs up; the first fails: the heir's own work at that moment
  (SyncEngine.peer_failed: adopt, queue the copies for its new backup, regroup),
  during which its node forwards nothing, then the time until the new backup holds
  all N copies. Detection (heartbeats, 100 ms by default) comes before it and is
  not in it (experiments/bench_failover.py measures the whole).

Raw points go to scaling.json in the run's folder, and figures/scaling.png is
drawn from that file alone (``python -m experiments.bench_scaling --plot DIR`` redraws it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from experiments.bench_sync import bulk_transfer, memory_per_entry
from experiments.synfill import FILL_DPORT, FILL_PREFIX

POINTS = {  # the default run's points, and BENCH=scaling's
    "table": ((0, 100_000, 1_000_000), (0, 1_000, 10_000, 100_000, 300_000, 1_000_000)),
    "bulk": ((10_000, 100_000, 1_000_000), (10_000, 30_000, 100_000, 300_000, 1_000_000)),
    "memory": ((1_000, 100_000, 1_000_000), (1_000, 10_000, 100_000, 300_000, 1_000_000)),
    "adopt": ((100, 10_000, 100_000), (100, 1_000, 10_000, 30_000, 100_000)),
    "lag": ((1_000, 10_000, 50_000), (100, 1_000, 3_000, 10_000, 20_000, 50_000)),
}
FILL_SHARE = 0.99  # a chunk counts as admitted at 99% of its keys (a few frames lost)
FILL_CHUNK = 50_000  # keys sent, then counted in the node's table
FILL_RATE = 25_000.0  # SYNs a second: a node here admits about 30k new connections a second
FILL_TRIES = 4  # a chunk short of its share is sent again, at half the rate each time


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 and n % 1_000_000 == 0 else \
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


# -- data plane against table size -------------------------------------------------
def fill_table(control: str, n: int) -> int:
    """Send the fill's SYNs into the running bench node, a chunk at a time, each paced
    below the rate at which it admits new connections, until its table holds n of
    them (FILL_SHARE); return the entries it holds."""
    from experiments import bench
    held = 0
    for first in range(0, n, FILL_CHUNK):
        count, rate = min(FILL_CHUNK, n - first), FILL_RATE
        for _ in range(FILL_TRIES):
            subprocess.run(["ip", "netns", "exec", "fwb-a", "taskset", "-c", bench.TRAFFIC_CPU,
                            sys.executable, "-m", "experiments.synfill", "--intf", "a0",
                            "--dst", bench.ADDR_B, "--count", str(count), "--first", str(first),
                            "--rate", str(rate)], check=True, capture_output=True)
            held = settled_entries(control)
            if held >= FILL_SHARE * (first + count):
                break
            rate /= 2
        else:
            raise RuntimeError(f"the node's table holds {held} of the first {first + count} "
                               f"fill connections after {FILL_TRIES} tries")
    return held


def settled_entries(control: str, timeout: float = 30.0) -> int:
    """The node's entries once it has read what was queued (two equal counts in a row)."""
    from nodes.observe.client import ask
    deadline, last = time.monotonic() + timeout, -1
    while True:
        held = ask(control, "stats", timeout=10)["entries"]
        if held == last or time.monotonic() > deadline:
            return held
        last = held
        time.sleep(0.2)


def table_curve(points, seconds: float, out_dir: str) -> list[dict]:
    from experiments import bench
    rules = os.path.join(out_dir, "scaling.rules")
    with open(rules, "w") as fh:
        fh.write(bench.RULES + f"{FILL_PREFIX} {bench.ADDR_B} tcp {FILL_DPORT} accept\n")
    rows = []
    bench.build()
    try:
        for n in points:
            held = []
            tcp, udp, used = bench.through_node(
                rules, out_dir, seconds, "ring",
                args=("--max-entries", str(max(2 * n, 1000))),
                prepare=lambda control: held.append(fill_table(control, n)))
            rows.append({"entries": held[0], "asked": n, "tcp_gbps": tcp / 1e9,
                         "udp64_kpps": udp["pps"] / 1e3, "udp64_loss": udp["lost_percent"],
                         "cpu_us_per_frame": used[0] / used[1] * 1e6 if used[1] else None})
            print(f"scaling: table of {held[0]} entries: TCP {tcp / 1e9:.3f} Gbit/s, "
                  f"UDP {udp['pps'] / 1e3:.1f} kpps", file=sys.stderr, flush=True)
    finally:
        bench.teardown()
    return rows


# -- replication lag against the rate of state changes ------------------------------
def lag_at(rate: int, seconds: float, out_dir: str) -> dict:
    """fw1 (core 1) admits ``rate`` new connections a second for ``seconds``
    (synfill's SYNs, a burst each millisecond, from core 0) and replicates each on
    demand to fw2 (core 0 too: two cores here); fw1's lag from state change to fw2's
    acknowledgement, and how many of the offered changes fw1 admitted and fw2 holds."""
    from experiments.bench_sync import SERVER, node_pair
    from nodes.observe.client import ask
    count = max(100, int(rate * seconds))
    with node_pair(out_dir, f"{FILL_PREFIX} {SERVER} tcp {FILL_DPORT} accept\n",
                   {"mode": "ondemand", "replication": "full"}, tag="lag-curve") as socks:
        sent, took = subprocess.run(
            ["ip", "netns", "exec", "fws-a", "taskset", "-c", "0", sys.executable, "-m",
             "experiments.synfill", "--intf", "a0", "--dst", SERVER, "--count", str(count),
             "--rate", str(rate), "--burst", str(max(1, rate // 1000))],  # a burst a ms
            check=True, capture_output=True, text=True).stdout.split()
        sent, took = int(sent), float(took)
        admitted = settled_entries(socks["fw1"])
        backup = settled_entries(socks["fw2"])
        sync = ask(socks["fw1"], "stats", timeout=10)["sync"]
    counters = sync["counters"]
    return {"rate": rate, "offered": count, "sent": sent, "send_s": took,
            "sent_rate": sent / took, "admitted": admitted, "replicated": backup,
            "lag_ms_p50": sync["lag_ms_p50"], "lag_ms_p99": sync["lag_ms_p99"],
            "messages": counters.get("messages_sent", 0),
            "records": counters.get("records_sent", 0),
            "retransmissions": counters.get("retransmissions", 0),
            "dropped_overflow": counters.get("records_dropped_overflow", 0)}


def lag_curve(rates, seconds: float, out_dir: str) -> list[dict]:
    rows = []
    for rate in rates:
        row = lag_at(rate, seconds, out_dir)
        rows.append(row)
        print(f"scaling: {rate} new connections a second offered, {row['sent_rate']:.0f} sent, "
              f"{row['admitted']} of {row['offered']} admitted, {row['replicated']} replicated, "
              f"lag p50 {row['lag_ms_p50']} ms p99 {row['lag_ms_p99']} ms",
              file=sys.stderr, flush=True)
    return rows


# -- in process ----------------------------------------------------------------------
def bulk_curve(points) -> list[dict]:
    rows = []
    for n in points:
        took, messages, sent = bulk_transfer(n)
        rows.append({"entries": n, "seconds": took, "messages": messages,
                     "bytes_per_entry": sent / n})
    return rows


def memory_curve(points) -> list[dict]:
    rows = []
    for n in points:
        table, with_key = memory_per_entry(n)
        rows.append({"entries": n, "table_bytes": table, "with_key_bytes": with_key})
    return rows


def adoption(n: int) -> dict:
    """fw1 owns n connections, fw2 backs them up, fw3 backs up fw2; fw1 fails."""
    from experiments.bench_sync import _keys
    from nodes.conntrack import ConnectionTable
    from nodes.sync import SyncEngine, SyncSettings
    key = os.urandom(32)
    config = SyncSettings(mode="ondemand", bulk_timeout=600.0, k=1)
    tables = {i: ConnectionTable(max_entries=max(n, 1) + 10) for i in (1, 2, 3)}
    engines = {i: SyncEngine(i, [1, 2, 3], tables[i], key, config, boot=i, now=0.0)
               for i in (1, 2, 3)}
    for k in _keys(n):  # fw1's own connections, announced to its backup as they open
        engines[1].state_changed("new", tables[1].new_entry(k, "ESTABLISHED", 0.0, "fw1"), 0.0)
    now = 0.0

    def exchange(alive, until, limit):
        nonlocal now
        start = time.perf_counter()
        while not until():
            for i in alive:
                engines[i].tick(now)
                for peer, data in engines[i].outbox:
                    if peer in alive:
                        engines[peer].receive(data, now)
                engines[i].outbox.clear()
            now += 0.001
            if time.perf_counter() - start > limit:
                raise RuntimeError(f"adoption bench ({n} connections): {until.__doc__} "
                                   f"not within {limit:.0f} s")
        return time.perf_counter() - start

    def backed_up():
        """fw2 holding every copy"""
        return all(e.ready for e in engines.values()) and len(tables[2]) == n
    exchange((1, 2, 3), backed_up, 120 + n / 5000)
    if any(e.owner != "fw1" for e in tables[2].entries()):
        raise RuntimeError("adoption bench: fw2's copies are not fw1's")
    start = time.perf_counter()
    engines[2].peer_failed(1, now, "node_failed")
    heir = time.perf_counter() - start
    engines[3].peer_failed(1, now, "node_failed")

    def rereplicated():
        """fw3 holding every adopted connection"""
        return sum(e.owner == "fw2" for e in tables[3].entries()) == n
    copies = exchange((2, 3), rereplicated, 120 + n / 5000)
    adopted = engines[2].counters["entries_adopted"]
    if adopted != n:
        raise RuntimeError(f"adoption bench: fw2 adopted {adopted} of {n}")
    return {"entries": n, "heir_ms": heir * 1000, "rereplicated_s": copies + heir}


def adopt_curve(points) -> list[dict]:
    return [adoption(n) for n in points]


# -- the benchmark -------------------------------------------------------------------
def scaling(seconds: float, out_dir: str, full: bool = False) -> dict:
    pick = 1 if full else 0
    data = {"full": full, "seconds": seconds,
            "memory": memory_curve(POINTS["memory"][pick]),
            "bulk": bulk_curve(POINTS["bulk"][pick]),
            "adopt": adopt_curve(POINTS["adopt"][pick]),
            "table": table_curve(POINTS["table"][pick], seconds, out_dir),
            "lag": lag_curve(POINTS["lag"][pick], min(seconds, 4.0), out_dir)}
    with open(os.path.join(out_dir, "scaling.json"), "w") as fh:
        json.dump(data, fh, indent=1)
    plot(out_dir)
    figures = {}
    for row in data["memory"]:
        figures[f"scaling_memory_{_label(row['entries'])}_with_key"] = (
            row["with_key_bytes"], "bytes per entry")
    for row in data["bulk"]:
        figures[f"sync_bulk_{_label(row['entries'])}_entries"] = (row["seconds"], "s")
    for row in data["adopt"]:
        label = _label(row["entries"])
        figures[f"scaling_adopt_{label}_heir"] = (row["heir_ms"], "ms")
        figures[f"scaling_adopt_{label}_rereplicated"] = (row["rereplicated_s"], "s")
    for row in data["lag"]:
        label = _label(row["rate"])
        figures[f"scaling_lag_{label}_per_s_p50"] = (row["lag_ms_p50"], "ms")
        figures[f"scaling_lag_{label}_per_s_p99"] = (row["lag_ms_p99"], "ms")
        figures[f"scaling_lag_{label}_per_s_admitted"] = (
            100 * row["admitted"] / row["offered"], "% of the offered changes")
        figures[f"scaling_lag_{label}_per_s_replicated"] = (
            100 * row["replicated"] / max(row["admitted"], 1), "% of the admitted")
    base = data["table"][0] if data["table"] else None
    for row in data["table"]:
        label = _label(row["asked"])
        figures[f"scaling_table_{label}_tcp"] = (row["tcp_gbps"], "Gbit/s")
        figures[f"scaling_table_{label}_udp64"] = (row["udp64_kpps"], "kpps")
        if base and row is not base:
            figures[f"scaling_table_{label}_tcp_ratio"] = (
                100 * row["tcp_gbps"] / base["tcp_gbps"], "% of the empty table")
            figures[f"scaling_table_{label}_udp64_ratio"] = (
                100 * row["udp64_kpps"] / base["udp64_kpps"], "% of the empty table")
    return figures


def plot(run_dir: str) -> str:
    """figures/scaling.png from scaling.json: a panel a curve, the work on a log scale."""
    from experiments.analysis.style import STYLE, plt, save
    with open(os.path.join(run_dir, "scaling.json")) as fh:
        data = json.load(fh)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    panels = (  # (raw data, x field, x label, ((y field, label), ...), y scales)
        ("table", "entries", "connections in the table",
         (("tcp_gbps", "TCP, Gbit/s"), ("udp64_kpps", "64-byte UDP, kpps / 100")),
         {"udp64_kpps": 0.01}),
        ("bulk", "entries", "entries sent to a joining node",
         (("seconds", "bulk transfer, s"),), {}),
        ("memory", "entries", "entries in the table",
         (("with_key_bytes", "bytes per entry, keys too"),
          ("table_bytes", "bytes per entry, table only")), {}),
        ("adopt", "entries", "connections adopted",
         (("rereplicated_s", "until re-replicated, s"), ("heir_ms", "heir's own work, s"),),
         {"heir_ms": 1e-3}),
        ("lag", "rate", "new connections a second, offered",
         (("lag_ms_p50", "replication lag p50, ms"), ("lag_ms_p99", "replication lag p99, ms")),
         {}),
    )
    for ax, (name, x, xlabel, series, scale) in zip(axes.flat, panels):
        rows = [r for r in data.get(name, []) if r.get(x)]
        for field, label in series:
            ax.plot([r[x] for r in rows], [r[field] * scale.get(field, 1) for r in rows],
                    marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(True, alpha=0.3)
    lag_rows = [r for r in data.get("lag", []) if r.get("rate")]
    if lag_rows:  # where it saturates: the share of the offered changes admitted
        axes.flat[4].set_yscale("log")
        share = axes.flat[4].twinx()
        share.plot([r["rate"] for r in lag_rows],
                   [100 * r["admitted"] / r["offered"] for r in lag_rows],
                   color="grey", linestyle="--", marker="x", label="admitted, % of offered")
        share.set_ylim(0, 105)
        share.legend(fontsize=8, loc="lower left")
    axes.flat[5].axis("off")
    empty = [r for r in data.get("table", []) if not r.get("entries")]
    if empty:  # the same node with an empty table: the baseline of the first panel
        axes.flat[0].axhline(empty[0]["tcp_gbps"], linestyle="--", color="grey",
                             label="empty table, TCP")
        axes.flat[0].legend(fontsize=8)
    with plt.rc_context(STYLE):
        fig.suptitle("How costs grow with their work (make bench" +
                     (" BENCH=scaling)" if data.get("full") else ")"))
    return save(fig, run_dir, "scaling")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="redraw scaling.png from scaling.json")
    parser.add_argument("--plot", required=True, metavar="RUN_DIR")
    args = parser.parse_args(argv)
    print(plot(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
