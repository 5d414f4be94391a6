"""make bench: benchmarks that print ``name: value unit`` and write JSON.

Benchmarks: dataplane (below), sync_memory, sync_bulk, sync_lag and
sync_hold_during_bulk (experiments/bench_sync.py), failover (experiments/bench_failover.py),
failover_side (the same, Python nodes and kernel nodes with a UDP probe),
home (experiments/bench_home.py); scaling (experiments/bench_scaling.py: how each
cost grows with its work; more points with make bench BENCH=scaling); robustness
(experiments/bench_robust.py, only when named: make bench BENCH=robustness).

dataplane: iperf3 TCP throughput and 64-byte UDP packet rate between two
namespaces, first through a Linux bridge (the kernel doing the same bump-
in-the-wire forwarding), then through one firewall node process (its TX
ring, plain sockets, its kernel fast path) and a kernel node, in the same
run on the same veths; the ratios are node / kernel.

    python -m experiments.bench [NAME_PREFIX ...] [--seconds S]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from statistics import median

from topo.addresses import offload_args
from topo.procs import Proc, wait_until

NS = ("fwb-a", "fwb-fw", "fwb-b")
ADDR_A, ADDR_B = "10.9.0.1", "10.9.0.2"
RULES = f"{ADDR_A} {ADDR_B} tcp 5201 accept\n{ADDR_A} {ADDR_B} udp 5201 accept\n"
NODE_CPU, TRAFFIC_CPU = "1", "0"


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    return subprocess.run(full, capture_output=True, text=True, check=check).stdout


def teardown() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def build() -> None:
    """a --veth-- fw --veth-- b, offloads off everywhere."""
    teardown()
    for ns in NS:
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", "fwa", "netns", "fwb-fw", "type", "veth", "peer", "name", "a0",
       "netns", "fwb-a")
    sh("ip", "link", "add", "fwb", "netns", "fwb-fw", "type", "veth", "peer", "name", "b0",
       "netns", "fwb-b")
    for ns, intf, addr in (("fwb-a", "a0", ADDR_A), ("fwb-b", "b0", ADDR_B),
                           ("fwb-fw", "fwa", None), ("fwb-fw", "fwb", None)):
        sh(*offload_args(intf), ns=ns)
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
        if addr:
            sh("ip", "addr", "add", f"{addr}/24", "dev", intf, ns=ns)
        sh("ip", "link", "set", intf, "up", ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    # Receive processing of the middle veths on the forwarding core, for the
    # kernel bridge and for the node alike (RPS), so both get the same CPU.
    mask = format(1 << int(NODE_CPU), "x")
    for intf in ("fwa", "fwb"):
        sh("sh", "-c", f"echo {mask} > /sys/class/net/{intf}/queues/rx-0/rps_cpus", ns="fwb-fw")


def iperf(udp: bool, seconds: float) -> dict:
    """One iperf3 run from a to b, both pinned to the traffic core."""
    server = subprocess.Popen(["ip", "netns", "exec", "fwb-b", "taskset", "-c", TRAFFIC_CPU,
                               "iperf3", "-s", "-1", "-B", ADDR_B], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # iperf3 has no readiness signal; the client retries below
        args = ["-u", "-l", "64", "-b", "0"] if udp else []
        for _ in range(20):
            out = subprocess.run(["ip", "netns", "exec", "fwb-a", "taskset", "-c", TRAFFIC_CPU,
                                  "iperf3", "-c", ADDR_B, "-t", str(seconds), "-J", *args],
                                 capture_output=True, text=True)
            data = json.loads(out.stdout or "{}")
            if "end" in data and not data.get("error"):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"iperf3 failed: {data.get('error', out.stderr.strip())}")
    finally:
        server.kill()
        server.wait()
    end = data["end"]
    if udp:
        s = end["sum"]
        received = s["packets"] - s["lost_packets"]
        return {"pps": received / s["seconds"], "sent_pps": s["packets"] / s["seconds"],
                "lost_percent": s["lost_percent"]}
    return {"bps": end["sum_received"]["bits_per_second"]}


def dataplane(seconds: float, out_dir: str) -> dict:
    """Kernel bridge vs one firewall node, same veths, same run."""
    build()
    figures = {}
    try:
        sh("ip", "link", "add", "br0", "type", "bridge", ns="fwb-fw")
        for intf in ("fwa", "fwb"):
            sh("ip", "link", "set", intf, "master", "br0", ns="fwb-fw")
        sh("ip", "link", "set", "br0", "up", ns="fwb-fw")
        kernel_tcp = iperf(False, seconds)["bps"]
        kernel_udp = iperf(True, seconds)
        sh("ip", "link", "del", "br0", ns="fwb-fw")

        rules = os.path.join(out_dir, "bench.rules")
        with open(rules, "w") as fh:
            fh.write(RULES)
        node = {variant: through_node(rules, out_dir, seconds, variant)
                for variant in ("ring", "socket", "fastpath", "kernelnode")}
        figures.update(window_cost(rules, out_dir, seconds))
    finally:
        teardown()
    figures["dataplane_tcp_kernel"] = (kernel_tcp / 1e9, "Gbit/s")
    figures["dataplane_udp64_kernel"] = (kernel_udp["pps"] / 1e3, "kpps")
    for variant, (tcp, udp, _) in node.items():
        tag = {"ring": "node", "socket": "node_socket", "fastpath": "fastpath",
               "kernelnode": "kernelnode"}[variant]
        figures[f"dataplane_tcp_{tag}"] = (tcp / 1e9, "Gbit/s")
        figures[f"dataplane_tcp_{tag}_ratio"] = (100 * tcp / kernel_tcp, "% of kernel")
        figures[f"dataplane_udp64_{tag}"] = (udp["pps"] / 1e3, "kpps")
        figures[f"dataplane_udp64_{tag}_loss"] = (udp["lost_percent"], "%")
        figures[f"dataplane_udp64_{tag}_ratio"] = (100 * udp["pps"] / kernel_udp["pps"],
                                                   "% of kernel")
    return figures


WINDOW_PAIRS = 3


def window_cost(rules: str, out_dir: str, seconds: float, pairs: int = WINDOW_PAIRS) -> dict:
    """TCP window tracking's cost: the default node against the same node with the
    check off (``--no-tcp-window-check``), in pairs run back to back, in the order
    ABBA ABBA... so that a drift of the machine's speed falls on both alike.

    Two measures, each the median over the pairs: the throughput lost, 1 - checked /
    unchecked; and the node's CPU time per frame it forwarded (user + system time of
    its process over the frames its two ports received), which the host taking the
    CPU away (steal, 30-50% here on a busy day) leaves out: the node is CPU-bound, so
    1 - unchecked / checked CPU per frame is the throughput it loses when the CPU is
    its own. One pair of throughput runs gave 21% and -2% on the same build here."""
    costs, cpu_costs, checked, unchecked, cpp = [], [], [], [], {"ring": [], "nowindow": []}
    for i in range(pairs):
        order = ("ring", "nowindow") if i % 2 == 0 else ("nowindow", "ring")
        rate, per_frame = {}, {}
        for v in order:
            rate[v], _, used = through_node(rules, out_dir, seconds, v, udp=False)
            per_frame[v] = used[0] / used[1] * 1e6
            cpp[v].append(per_frame[v])
        checked.append(rate["ring"])
        unchecked.append(rate["nowindow"])
        costs.append(100 * (1 - rate["ring"] / rate["nowindow"]))
        cpu_costs.append(100 * (1 - per_frame["nowindow"] / per_frame["ring"]))
    with open(os.path.join(out_dir, "window-pairs.json"), "w") as fh:  # the raw pairs
        json.dump({"order": "ABBA, A = checked (ring), B = nowindow",
                   "bps": {"checked": checked, "nowindow": unchecked},
                   "cpu_us_per_frame": {"checked": cpp["ring"], "nowindow": cpp["nowindow"]},
                   "throughput_cost_percent": costs, "cpu_cost_percent": cpu_costs}, fh, indent=1)
    engine = engine_window_cost()
    return {"dataplane_tcp_engine_checked": (engine["checked"], "us a segment in process"),
            "dataplane_tcp_engine_nowindow": (engine["nowindow"], "us a segment in process"),
            # the check's time in process, as a share of the node's whole CPU per frame
            # (the I/O around the engine does not depend on it): steadier than the pairs
            "dataplane_tcp_window_engine_share": (
                100 * (engine["checked"] - engine["nowindow"]) / median(cpp["ring"]),
                "% of the node's CPU per frame (the check's time in process)"),
            "dataplane_tcp_node_window_pairs": (pairs, "pairs"),
            "dataplane_tcp_node_checked": (median(checked) / 1e9, "Gbit/s"),
            "dataplane_tcp_node_nowindow": (median(unchecked) / 1e9, "Gbit/s"),
            "dataplane_tcp_window_cost": (median(costs), "% less TCP with window tracking"),
            "dataplane_tcp_window_cost_min": (min(costs), "%"),
            "dataplane_tcp_window_cost_max": (max(costs), "%"),
            "dataplane_tcp_node_cpu_per_frame": (median(cpp["ring"]), "us"),
            "dataplane_tcp_node_nowindow_cpu_per_frame": (median(cpp["nowindow"]), "us"),
            "dataplane_tcp_window_cpu_cost": (median(cpu_costs),
                                              "% of the node's CPU per frame for window tracking"),
            "dataplane_tcp_window_cpu_cost_min": (min(cpu_costs), "%"),
            "dataplane_tcp_window_cpu_cost_max": (max(cpu_costs), "%")}


def engine_window_cost(segments: int = 3000, rounds: int = 7, seed: int = 16) -> dict:
    """Microseconds the gateway engine takes a segment of an established TCP stream
    (``tcp_stream``), with window tracking and without (``tcp_window_check``), in
    process: the best of ``rounds``, each a fresh engine fed the same frames."""
    import random

    from nodes.engine import GatewayEngine
    from nodes.rules import RuleSet
    rnd = random.Random(seed)
    rules = RuleSet.from_text(RULES)
    stream = tcp_stream(rnd, segments)
    start, stream = stream[:3], stream[3:]
    best = {}
    for variant, check in (("checked", True), ("nowindow", False)) * rounds:
        fw = GatewayEngine("fw1", rules, tcp_window_check=check)
        for frame, port in start:
            fw.process(frame, port, 0.0)
        began = time.perf_counter()
        verdicts = [fw.process(frame, port, 1.0) for frame, port in stream]
        took = (time.perf_counter() - began) / len(stream) * 1e6
        if any(verdicts) or fw.counters["tcp_window_ignored"]:
            raise RuntimeError(f"engine_window_cost: the stream was not all accepted "
                               f"({variant}): {dict(fw.drops)}")
        best[variant] = min(best.get(variant, took), took)
    return best


def tcp_stream(rnd, segments: int, client: bytes = bytes((10, 9, 0, 1)), sport: int = 40000,
               server: bytes = bytes((10, 9, 0, 2)), dport: int = 5201) -> list:
    """(frame, port) of an iperf3-like TCP connection: the handshake (MSS, SACK,
    timestamps, window scale 7), then ``segments`` 1448-byte segments with timestamps
    and an acknowledgement every second one; both directions' sequence numbers random
    32-bit ones (most above 2**30, as on a wire); checksums right."""
    from experiments.synfill import tcp_frame
    from nodes.engine import INSIDE, OUTSIDE
    stamp = b"\x01\x01\x08\x0a" + bytes(8)  # NOP NOP TIMESTAMP
    opening = b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + bytes(8) + b"\x01\x03\x03\x07"
    mac_c, mac_s = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"

    def segment(out: bool, flags: int, seq: int, ack: int, size: int = 0,
                options: bytes = stamp, window: int = 501):  # 501 << 7 once scaled
        if out:
            return tcp_frame(mac_c, client, sport, server, dport, seq, ack, flags, window,
                             options, size, mac_s), OUTSIDE
        return tcp_frame(mac_s, server, dport, client, sport, seq, ack, flags, window,
                         options, size, mac_c), INSIDE

    c_isn, s_isn = rnd.randrange(2 ** 32), rnd.randrange(2 ** 32)
    frames = [segment(True, 0x02, c_isn, 0, options=opening, window=64240),  # a SYN's window
              segment(False, 0x12, s_isn, c_isn + 1, options=opening, window=65160),  # is not
              segment(True, 0x10, c_isn + 1, s_isn + 1)]  # scaled (RFC 7323)
    seq = c_isn + 1
    for i in range(segments):
        frames.append(segment(True, 0x10, seq, s_isn + 1, 1448))
        seq += 1448
        if i % 2:
            frames.append(segment(False, 0x10, s_isn + 1, seq))
    return frames


def cpu_seconds(pid: int) -> float:
    """User and system time of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def frames_received() -> int:
    """Frames the node's two ports received (both directions of the traffic)."""
    return sum(int(sh("cat", f"/sys/class/net/{intf}/statistics/rx_packets", ns="fwb-fw"))
               for intf in ("fwa", "fwb"))


VARIANT_ARGS = {"socket": ["--no-ring"], "nowindow": ["--no-tcp-window-check"],
                "fastpath": ["--fastpath", "on"]}


def through_node(rules: str, out_dir: str, seconds: float, variant: str,
                 udp: bool = True, args: tuple = (), prepare=None) -> tuple:
    """TCP bit rate, UDP result (None without ``udp``) and (CPU seconds of the node
    process, frames its ports received) over the TCP run, through one node process on
    its own core. Variants: "ring" (the default node), "socket" (no TX ring),
    "nowindow" (no TCP window tracking), "fastpath" (the node's kernel forwards the
    established connections: nodes/fastpath.py), "kernelnode": through a kernel node
    (nodes/kernel/agent.py: br0, nftables from the same rules, conntrack), the
    kernel's work on whichever core it lands. ``args`` go to the node's command line;
    ``prepare(control_socket)`` runs once it is up, before the measurement."""
    sock = os.path.join(tempfile.mkdtemp(prefix="fwbench-"), "fw.sock")
    module = "nodes.kernel.agent" if variant == "kernelnode" else "nodes.shell.node"
    cmd = ["ip", "netns", "exec", "fwb-fw", "taskset", "-c", NODE_CPU, sys.executable, "-m",
           module, "--name", "fw1", "--outside", "fwa", "--inside", "fwb",
           "--rules", rules, "--control", sock] + VARIANT_ARGS.get(variant, []) + list(args)
    node = Proc(f"fw-bench-{variant}", cmd, os.path.join(out_dir, f"fw-bench-{variant}.log"))
    try:
        wait_until(lambda: os.path.exists(sock) or not node.alive(), 10, "the node")
        if not node.alive():
            raise RuntimeError(f"the node exited: {node.log_tail()}")
        if prepare is not None:
            prepare(sock)
        cpu, frames = cpu_seconds(node.pid), frames_received()
        tcp = iperf(False, seconds)["bps"]
        used = (cpu_seconds(node.pid) - cpu, frames_received() - frames)
        return tcp, iperf(True, seconds) if udp else None, used
    finally:
        node.stop()


def _sync(name):
    def run(seconds, out_dir):
        from experiments import bench_sync
        return getattr(bench_sync, name)(seconds, out_dir)
    return run


def _failover(seconds, out_dir):
    """Default detection (20 ms heartbeats, dead after 100 ms), then a fast one (10/40)."""
    from experiments import bench_failover
    figures = bench_failover.failover(seconds, out_dir)
    fast = bench_failover.failover(seconds, out_dir, heartbeat=0.01, dead_after=0.04)
    figures.update({k.replace("failover_", "failover_fast_"): v for k, v in fast.items()})
    return figures


def _failover_side(seconds, out_dir):
    """Fault to the UDP stream through the backup: two Python nodes crashed (with their
    death notice, then by heartbeats only), hung and cut off (their outside link
    down), then two kernel nodes crashed."""
    from experiments import bench_failover
    figures = bench_failover.crash_to_stream("python", out_dir)
    figures.update(bench_failover.crash_to_stream("python", out_dir, death_notice=False))
    for fault in ("hang", "linkdown"):
        figures.update(bench_failover.crash_to_stream("python", out_dir, fault=fault))
    figures.update(bench_failover.crash_to_stream("kernel", out_dir))
    return figures


def _home(seconds, out_dir):
    from experiments import bench_home
    return bench_home.home(seconds, out_dir)


def _scaling(seconds, out_dir, full=False):
    from experiments import bench_scaling
    return bench_scaling.scaling(seconds, out_dir, full=full)


def _robustness(seconds, out_dir):
    from experiments import bench_robust
    return bench_robust.robustness(seconds, out_dir)


BENCHMARKS = {"dataplane": dataplane, "sync_memory": _sync("sync_memory"),
              "sync_bulk": _sync("sync_bulk"), "sync_lag": _sync("sync_lag"),
              "sync_lag_kernelnode": _sync("sync_lag_kernelnode"),
              "sync_hold_during_bulk": _sync("sync_hold_during_bulk"),
              "failover": _failover, "failover_side": _failover_side, "home": _home,
              "scaling": _scaling, "robustness": _robustness}
# Benchmarks with more points when named (make bench BENCH=scaling) than in the default run
FULLER_WHEN_NAMED = ("scaling",)
ON_REQUEST = ("robustness",)  # long (up to 30 minutes): only when named


def select(names: list[str]) -> list[str]:
    """The benchmarks to run: all but ON_REQUEST without names; a benchmark's own name
    picks that one; another name picks those it prefixes (sync: sync_*) or that
    prefix it (dataplane_tcp: dataplane, whose figures are then filtered)."""
    if not names:
        return [n for n in BENCHMARKS if n not in ON_REQUEST]
    return [n for n in BENCHMARKS if any(n == p if p in BENCHMARKS else
                                         n.startswith(p) or p.startswith(n) for p in names)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run benchmarks whose name starts so")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces): run as root", file=sys.stderr)
        return 2
    chosen = select(args.names)
    if not chosen:
        print(f"bench: no benchmark matches {args.names} (have: {', '.join(BENCHMARKS)})",
              file=sys.stderr)
        return 2
    from experiments.run import git_commit
    commit, dirty = git_commit()
    out_dir = os.path.join(args.results, time.strftime("bench-%Y%m%dT%H%M%SZ", time.gmtime())
                           + f"-{commit[:7]}{'+' if dirty else ''}")
    os.makedirs(out_dir)
    results = {}
    for name in chosen:
        full = {"full": True} if name in FULLER_WHEN_NAMED and name in args.names else {}
        figures = BENCHMARKS[name](args.seconds, out_dir, **full)
        for key, (value, unit) in figures.items():
            if not args.names or name in args.names or any(key.startswith(p) for p in args.names):
                shown = "n/a" if value is None else f"{value:.3f}"
                print(f"{key}: {shown} {unit}", flush=True)
                results[key] = {"value": value, "unit": unit}
    with open(os.path.join(out_dir, "bench.json"), "w") as fh:
        json.dump({"commit": commit, "dirty": dirty, "seconds": args.seconds,
                   "cpus": {"node": NODE_CPU, "traffic": TRAFFIC_CPU}, "figures": results},
                  fh, indent=2)
    print(f"bench: wrote {out_dir}/bench.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
