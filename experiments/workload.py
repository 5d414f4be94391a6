"""FTP workload: files, a seeded session plan, servers and clients in a cluster.

Which node carried each session's control and data connection is read from
the nodes' own event logs by experiments/analysis/attribution.py; ``attributed``
here waits for those logs.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time

from experiments.analysis.attribution import attribute, node_events, read_jsonl
from experiments.files import file_sizes, make_files
from topo.addresses import server_address
from topo.procs import wait_until


def session_family(family: str, mode: str) -> str:
    """The IP version a session runs over: ``family``, but in "dual" EPRT and EPSV go
    over IPv6 and PORT and PASV (IPv4's own, RFC 2428) over IPv4."""
    if family == "dual":
        return "ipv6" if mode in ("EPRT", "EPSV") else "ipv4"
    return family


def ramp_starts(sessions: int, ramp: list[list[float]]) -> list[float]:
    """When each of ``sessions`` sessions starts (seconds from the start) so that the
    rate follows ``ramp``, [seconds, relative rate] points joined by straight lines:
    session i starts where the rate's integral reaches (i + 0.5) / sessions of its whole."""
    pieces = []  # (t0, t1, r0, r1, area before t0)
    area = 0.0
    for (t0, r0), (t1, r1) in zip(ramp, ramp[1:]):
        pieces.append((t0, t1, r0, r1, area))
        area += (t1 - t0) * (r0 + r1) / 2
    starts = []
    for i in range(sessions):
        target = (i + 0.5) / sessions * area
        t0, t1, r0, r1, before = next(p for p in pieces
                                      if p[4] + (p[1] - p[0]) * (p[2] + p[3]) / 2 >= target)
        need, slope = target - before, (r1 - r0) / (t1 - t0)
        if abs(slope) < 1e-12:
            dt = need / r0
        else:  # r0 dt + slope dt^2 / 2 = need
            dt = (-r0 + math.sqrt(max(0.0, r0 * r0 + 2 * slope * need))) / slope
        starts.append(round(t0 + min(max(dt, 0.0), t1 - t0), 6))
    return starts


def plan_sessions(sessions: int, clients: int, servers: int, modes: list[str],
                  files: dict[str, str], seed: int, family: str = "ipv4",
                  ramp: list[list[float]] | None = None) -> dict[int, list[dict]]:
    """Seeded plan: session i uses mode i mod len(modes), a random client, server, file,
    over the IP version ``family`` gives it; with a ``ramp``, each session also has the
    time it starts at (``at``, seconds after its client starts)."""
    rnd = random.Random(seed)
    plan: dict[int, list[dict]] = {c: [] for c in range(1, clients + 1)}
    names = sorted(files)
    starts = ramp_starts(sessions, ramp) if ramp else None
    for sid in range(sessions):
        name = rnd.choice(names)
        client = rnd.randint(1, clients)
        mode = modes[sid % len(modes)]
        fam = session_family(family, mode)
        item = {"session": sid, "server": server_address(rnd.randint(1, servers), fam),
                "file": name, "sha256": files[name], "mode": mode, "family": fam}
        if starts:
            item["at"] = starts[sid]
        plan[client].append(item)
    return plan


def start_ftp_servers(cluster, root: str, family: str = "ipv4") -> list:
    """An FTP server on every inside host, serving ``root`` (one a family the sessions
    use); return once they all listen."""
    servers = []
    for i in range(1, cluster.servers + 1):
        for fam in ("ipv4", "ipv6"):
            if family in (fam, "dual"):
                servers.append(cluster.spawn(f"ftpd{'6' * (fam == 'ipv6')}-srv{i}", [
                    sys.executable, "-m", "experiments.ftp_server", "--root", root,
                    "--address", server_address(i, fam)], host=cluster.net[f"srv{i}"]))
    for proc in servers:
        wait_until(lambda p=proc: "ready" in p.log_tail(20) or cluster._died(p), 15,
                   f"{proc.name} to listen")
    cluster.log("ftp_servers_up", servers=len(servers))
    return servers


def start_ftp_client(cluster, name: str, client: str, plan: list[dict], plan_path: str,
                     out: str, concurrency: int, timeout: float, throttle: float = 0.0,
                     pause: float = 0.0):
    """An FTP client process in host ``client`` running the sessions of ``plan``
    (written to ``plan_path``), ``concurrency`` at once; one JSON line a session to ``out``."""
    with open(plan_path, "w", encoding="utf-8") as fh:
        json.dump(plan, fh, indent=1)
    return cluster.spawn(name, [
        sys.executable, "-m", "experiments.ftp_client", "--plan", plan_path,
        "--out", out, "--concurrency", str(concurrency), "--timeout", str(timeout),
        "--throttle", str(throttle), "--pause-before-data", str(pause)],
        host=cluster.net[client])


def session_time(timeout: float, size: int, throttle: float = 0.0, pause: float = 0.0) -> float:
    """The longest one session may take: a few timeouts, its pause, its transfer."""
    return timeout * 4 + pause + size / 1e6 + (size / throttle if throttle else 0)


def run_ftp(cluster, out_dir: str, sessions: int, modes: list[str], file_size: int,
            files: int, concurrency: int, timeout: float, seed: int,
            progress=None, throttle: float = 0.0, size_dist: str = "fixed",
            pause_before_data: float = 0.0, family: str = "ipv4",
            ramp: list[list[float]] | None = None) -> list[dict]:
    """Start FTP servers and clients in ``cluster``; return the session records."""
    root = os.path.join(out_dir, "ftp-root")
    sums = make_files(root, files, file_size, seed, size_dist)
    largest = max(file_sizes(files, file_size, size_dist))
    servers = start_ftp_servers(cluster, root, family)
    plan = plan_sessions(sessions, cluster.clients, cluster.servers, modes, sums, seed, family,
                         ramp)
    out = os.path.join(out_dir, "sessions.raw.jsonl")
    clients = [start_ftp_client(cluster, f"ftp-c{c}", f"c{c}", items,
                                os.path.join(out_dir, f"plan-c{c}.json"), out, concurrency,
                                timeout, throttle, pause_before_data)
               for c, items in plan.items() if items]
    cluster.log("ftp_clients_start", sessions=sessions)
    # Each session ends by itself within a few timeouts; allow for the slowest client.
    per_client = max(len(items) for items in plan.values())
    deadline = time.monotonic() + 30 + (ramp[-1][0] if ramp else 0) + per_client * \
        session_time(timeout, largest, throttle, pause_before_data)
    while any(p.alive() for p in clients):
        if progress:
            progress(_count_lines(out), sessions)
        if time.monotonic() > deadline:
            cluster.log("ftp_clients_deadline")
            break
        time.sleep(0.2)
    for proc in clients + servers:
        proc.stop()
    cluster.log("ftp_done")
    return read_jsonl(out)


def _count_lines(path: str) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def attributed(records: list[dict], folder: str, timeout: float = 2.0) -> list[dict]:
    """``attribute`` over the nodes' events in ``folder``, once they hold these sessions'
    connections (nodes write their events twice a second), or as known at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done = attribute(records, node_events(folder))
        if all(r["control_node"] and (r["data_node"] or not r.get("announced")) for r in done) \
                or time.monotonic() >= deadline:
            return done
        time.sleep(0.1)
