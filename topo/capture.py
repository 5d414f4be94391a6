"""Packet captures of a running cluster: tcpdump per link, the sync network once per message.

``cluster.capture`` (a spec's ``cluster.capture``, the CLI's ``--capture``)
names what to record: ``sync`` (the cluster network) and any host interface
(``c1-eth0``, ``fw2-eth1``). Files go to the run folder's pcap/; the
Wireshark dissector nodes/wireshark/fwsync.lua decodes the sync protocol.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from topo.errors import SetupError
from topo.procs import wait_until


def start(cluster) -> None:
    """tcpdump on what cluster.capture names, each into run_dir/pcap/NAME.pcap.

    "sync" records what every node sends on the cluster network (its sync
    link, outgoing only), so each message is in the capture once; the parts
    are merged into sync.pcap when the cluster stops."""
    if not cluster.capture:
        return
    folder = os.path.join(cluster.run_dir, "pcap")
    os.makedirs(folder, exist_ok=True)
    if shutil.which("tcpdump") is None:
        raise SetupError("tcpdump not found: run 'make setup' to install it")
    jobs = []
    for what in cluster.capture:
        if what == "sync":
            if cluster.sync_config is None:
                raise SetupError("capture 'sync': this cluster has no cluster network "
                                 "(set a sync mode or failover)")
            jobs += [(f"sync-{n}", n, f"{n}-eth2", ["-Q", "out"]) for n in cluster.node_names()]
            continue
        host = what.split("-")[0]
        if host not in cluster.net or what not in cluster.net[host].intfNames():
            raise SetupError(f"capture {what!r}: no such interface (use 'sync' or a host "
                             "interface such as c1-eth0 or fw1-eth0)")
        jobs.append((what, host, what, []))
    for label, host, intf, extra in jobs:
        # --immediate-mode: libpcap hands tcpdump each packet as it comes, not a
        # TPACKET_V3 block at a time (a block closes when full or after tcpdump's 1 s
        # timeout, and one still open at the stop was lost: up to the last second of
        # a run, all of a short one); -U: each is written to the file at once
        proc = cluster.spawn(f"tcpdump-{label}", [
            "tcpdump", "-i", intf, "-U", "--immediate-mode", "-n", "-Z", "root", *extra,
            "-w", os.path.join(folder, f"{label}.pcap")], host=cluster.net[host])
        wait_until(lambda p=proc: "listening on" in p.log_tail() or cluster._died(p), 10,
                   f"tcpdump on {intf}")
    cluster.log("capture_start", capture=cluster.capture)

def merge(cluster) -> None:
    """Merge the per-node parts of the sync capture into pcap/sync.pcap."""
    folder = os.path.join(cluster.run_dir, "pcap")
    parts = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.startswith("sync-fw")) if os.path.isdir(folder) else []
    if not parts or shutil.which("mergecap") is None:
        return  # without mergecap the parts stay, one per node
    done = subprocess.run(["mergecap", "-w", os.path.join(folder, "sync.pcap"), *parts],
                          capture_output=True)
    if done.returncode == 0:
        for part in parts:
            os.unlink(part)


DISSECTOR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "nodes", "wireshark", "fwsync.lua")
NOBODY = 65534


def decode(pcap: str, *args: str) -> str:
    """What tshark prints for ``pcap`` (tshark's own options in ``args``) with the sync
    protocol's dissector loaded.

    Wireshark 4.4 (Debian 13) runs no Lua script as root; 4.0 (Debian 12) did.
    As root, tshark therefore runs as nobody, reading the capture on its standard
    input and the dissector from a copy it may read, in a home of its own."""
    if shutil.which("tshark") is None:
        raise SetupError("tshark not found: run 'make setup' to install it")
    with open(pcap, "rb") as capture:
        if os.geteuid() != 0:
            return _tshark(["tshark", "-X", f"lua_script:{DISSECTOR}", "-r", "-", *args],
                           capture, None)
        home = tempfile.mkdtemp(prefix="fwcluster-tshark-")
        try:
            os.chmod(home, 0o755)
            lua = os.path.join(home, "fwsync.lua")
            shutil.copyfile(DISSECTOR, lua)
            os.chmod(lua, 0o644)
            os.chown(home, NOBODY, NOBODY)
            return _tshark(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                            "--clear-groups", "tshark", "-X", f"lua_script:{lua}", "-r", "-",
                            *args], capture,
                           {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home})
        finally:
            shutil.rmtree(home, ignore_errors=True)


def _tshark(cmd: list[str], capture, env: dict | None) -> str:
    done = subprocess.run(cmd, stdin=capture, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if "dangerous" not in line]
        raise RuntimeError(f"tshark failed: {lines[-1] if lines else done.returncode}")
    return done.stdout
