"""Run an experiment spec: every point in its own cluster, raw data to disk.

A run writes ``results/<name>-<UTC time>-<commit>/`` holding the spec as
given and resolved, a manifest (versions, kernel, datapath, seed, commit,
host), and per point the event log, the nodes' event logs and final
counters, every process's log and the per-session raw data; then
``sessions.csv`` over all points, and the figures plotted from it.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata

from experiments import fidelity
from experiments import spec as specs
from experiments.scheduler import Timeline
from experiments.analysis.attribution import attribute, node_events
from experiments.workload import run_ftp
from topo.cluster import datapath
from topo.net import Cluster, EventLog

SESSION_FIELDS = ["point", "variant", "nodes", "repetition", "session", "mode", "outcome", "error",
                  "control_node", "data_node", "data_verdict", "same_node", "server", "file",
                  "bytes", "max_gap", "t_start", "t_connected", "t_first_byte", "t_end"]


def git_commit() -> tuple[str, bool]:
    """The checkout's commit and whether it has uncommitted changes."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", here, "status", "--porcelain"],
                                    capture_output=True, text=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def manifest(spec: dict) -> dict:
    """What a reader needs to know to trust or repeat the run."""
    def version(pkg):
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return None

    try:
        from mininet.net import VERSION as mininet_version
    except ImportError:
        mininet_version = None
    commit, dirty = git_commit()
    return {
        "experiment": spec["name"], "seed": spec["seed"], "repetitions": spec["repetitions"],
        "commit": commit, "dirty": dirty, "argv": sys.argv,
        "host": platform.node(), "kernel": platform.release(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "datapath": datapath(), "openvswitch": first_line(["ovs-vsctl", "--version"]),
        "mininet": mininet_version,
        "packages": {p: version(p) for p in ("ryu", "os-ken", "eventlet", "pyftpdlib",
                                             "scapy", "matplotlib", "fwcluster")},
        # what controller/compat.py imports: the one FWCLUSTER_FRAMEWORK asks for, else
        # Ryu where it is installed
        "controller_framework": os.environ.get("FWCLUSTER_FRAMEWORK", "").replace("_", "-")
        or ("ryu" if version("ryu") else "os-ken" if version("os-ken") else None),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_dir_name(spec: dict) -> str:
    commit, dirty = git_commit()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{spec['name']}-{stamp}-{commit[:7]}{'+' if dirty else ''}"


class Progress:
    """One line per step: experiment, point, elapsed time and time left."""

    def __init__(self, name: str, total: int, clock=time.monotonic):
        self.clock = clock
        self.name, self.total, self.t0, self.done = name, total, clock(), 0
        self.t_done = self.t0  # when the last point finished
        self.last = 0.0

    def finished(self) -> None:
        """One more point done."""
        self.done += 1
        self.t_done = self.clock()

    def left(self, now: float) -> float | None:
        """The points not done yet at the mean time of those done, less what the
        current one has run already (None before any is done)."""
        if not self.done:
            return None
        per_point = (self.t_done - self.t0) / self.done
        return max(0.0, per_point * (self.total - self.done) - (now - self.t_done))

    def __call__(self, msg: str, force: bool = True) -> None:
        now = self.clock()
        if not force and now - self.last < 2:
            return
        self.last = now
        elapsed = now - self.t0
        left = self.left(now)
        eta = f", about {left:.0f}s left" if left is not None else ""
        print(f"[{self.name} {min(self.done + 1, self.total)}/{self.total}] {msg} "
              f"({elapsed:.0f}s elapsed{eta})", flush=True)


def kernel_options(cl: dict) -> dict:
    """The Cluster options of a spec's [cluster] for its kind of node."""
    if cl.get("node", "python") != "kernel":
        return {}
    return {"node": "kernel", "commit": cl["commit"], "external_cache": cl["external_cache"],
            "conntrackd": None if cl["conntrackd"] == "auto" else cl["conntrackd"]}


def cluster_sync(cl: dict) -> dict:
    """The sync settings for the cluster runner; kernel nodes get the mode and what
    differs from the defaults (conntrackd refuses what it cannot mean)."""
    sync = specs.cluster_sync(cl)
    if cl.get("node", "python") != "kernel":
        return sync
    from nodes.kernel.conntrackd import given
    return given(sync)


def run_point(spec: dict, point: specs.Point, out: str, progress: Progress) -> list[dict]:
    """Bring up one cluster, run the traffic, collect, tear down.

    Writes into ``out``: spec.resolved.json, events.jsonl, the nodes' event
    logs, stats.json and raw.json (every node's counters and samples at the
    end), snapshots.jsonl (if the timeline takes any), sessions.jsonl, logs/,
    and last point.json (params, traffic times, fidelity): a point folder
    with point.json is complete.
    """
    resolved = specs.resolve(spec, point)
    with open(os.path.join(out, "spec.resolved.json"), "w", encoding="utf-8") as fh:
        json.dump(resolved, fh, indent=2)
    topo, traffic, cl = resolved["topology"], resolved["traffic"], resolved["cluster"]
    log = EventLog(os.path.join(out, "events.jsonl"))
    log("point_start", point=point.name, params=point.params, seed=point.seed,
        variant=point.variant)
    stats, raw = {}, {}
    progress(f"{point.name}: starting {topo['nodes']} node(s)")
    with Cluster(out, cl["rules"], n=topo["nodes"], clients=topo["clients"],
                 servers=topo["servers"], run_id=f"fwc-{os.getpid()}", log=log,
                 sync=cluster_sync(cl),
                 failover=None if cl["failover"] == "none" else cl["failover"],
                 steering=cl["steering"], latency=cl["latency_ms"] / 1000,
                 latency_via=cl["latency_via"], capture=cl["capture"],
                 checksum=cl["checksum"], tcp_liberal=cl["tcp_liberal"],
                 tcp_loose=cl["tcp_loose"], tcp_window_check=cl["tcp_window_check"],
                 time_wait_timeout=cl["tcp_timeout_time_wait"],
                 fastpath={True: "on", "off": "off"}.get(cl["fastpath"]),
                 **kernel_options(cl)) as cluster:
        progress(f"{point.name}: cluster up, running {traffic['sessions']} FTP sessions")
        switches = ["s1", "s2", "s3"]
        drops_before = fidelity.switch_drops(switches)
        cpu_before, t_start = fidelity.cpu_times(), time.time()
        timeline = Timeline(cluster, resolved["timeline"])
        timeline.start()
        try:
            records = run_ftp(cluster, out, traffic["sessions"], traffic["modes"],
                              traffic["file_size"], traffic["files"], traffic["concurrency"],
                              traffic["timeout"], point.seed,
                              progress=lambda n, total: progress(
                                  f"{point.name}: session {n}/{total}", force=False),
                              throttle=traffic["throttle"], size_dist=traffic["size_dist"],
                              pause_before_data=traffic["pause_before_data"],
                              family=traffic["family"], ramp=traffic["ramp"])
        finally:
            timeline.stop()
        cpu_after, t_end = fidelity.cpu_times(), time.time()
        drops_after = fidelity.switch_drops(switches)
        for problem in timeline.errors:
            progress(f"{point.name}: fault failed: {problem}")
        for event in timeline.skipped:
            log("fault_skipped", fault=event["fault"], at=event["at"])
            progress(f"{point.name}: {event['fault']} at {event['at']}s not applied: "
                     "the traffic had ended (more sessions or larger files make it last)")
        for node in cluster.node_names():
            if node in cluster.procs:
                try:
                    stats[node] = cluster.ask(node, "stats")
                    raw[node] = cluster.ask(node, "raw")
                except (OSError, ValueError):
                    stats[node] = {"error": "no answer (hung or gone)"}
    for name, data in (("stats.json", stats), ("raw.json", raw)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
    records = attribute(records, node_events(out))
    for rec in records:
        rec.update(point=point.name, nodes=topo["nodes"], repetition=point.repetition,
                   variant=point.variant)
    with open(os.path.join(out, "sessions.jsonl"), "w", encoding="utf-8") as fh:
        for rec in sorted(records, key=lambda r: r["session"]):
            fh.write(json.dumps(rec) + "\n")
    idle = fidelity.idle_share(cpu_before, cpu_after)
    steal = fidelity.steal_share(cpu_before, cpu_after)
    switch = {sw: drops_after[sw] - drops_before.get(sw, 0) for sw in drops_after}
    nodes = {n: fidelity.node_drops(st) for n, st in stats.items()}
    flags = fidelity.judge(idle, switch, nodes, steal)
    ok = sum(r["outcome"] == "ok" for r in records)
    summary = {"point": point.name, "experiment": spec["name"], "variant": point.variant,
               "params": point.params, "repetition": point.repetition, "seed": point.seed,
               "t_traffic_start": t_start, "t_traffic_end": t_end,
               "sessions": len(records), "ok": ok,
               "faults_failed": timeline.errors,
               "faults_skipped": [e["fault"] for e in timeline.skipped],
               "fidelity": {"idle_cpu": idle, "steal_cpu": steal, "switch_drops": switch,
                            "node_io_drops": nodes,
                            "emulator_bottleneck": bool(flags), "flags": flags}}
    with open(os.path.join(out, "point.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    log("point_end", sessions=len(records), ok=ok, fidelity_flags=flags)
    log.close()
    note = f"; FIDELITY: {'; '.join(flags)}" if flags else ""
    progress(f"{point.name}: {ok}/{len(records)} sessions ok, "
             f"{traffic['sessions'] - len(records)} missing{note}")
    return records


def run(spec_path: str, results: str = "results") -> str:
    """Run every point of a spec; return the run folder."""
    spec = specs.load(spec_path)
    run_dir = os.path.join(results, run_dir_name(spec))
    os.makedirs(run_dir)
    shutil.copy(spec_path, os.path.join(run_dir, "spec.toml"))
    with open(os.path.join(run_dir, "spec.resolved.json"), "w", encoding="utf-8") as fh:
        json.dump(spec, fh, indent=2)
    info = manifest(spec)
    with open(os.path.join(run_dir, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    pts = specs.points(spec)
    progress = Progress(spec["name"], len(pts))
    print(f"[{spec['name']}] {len(pts)} point(s), datapath {info['datapath']}, "
          f"writing {run_dir}", flush=True)
    records = []
    for point in pts:
        out = os.path.join(run_dir, "points", point.name)
        os.makedirs(out)
        records += run_point(spec, point, out, progress)
        progress.finished()
    write_csv(records, os.path.join(run_dir, "sessions.csv"))
    info["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(os.path.join(run_dir, "manifest.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    return run_dir


def write_csv(records: list[dict], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SESSION_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for rec in sorted(records, key=lambda r: (r["point"], r["session"])):
            writer.writerow(rec)
