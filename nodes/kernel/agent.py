"""The process of a kernel firewall node (nodes/kernel/): sets the node up, runs
conntrackd, beacons to the steering controller and commits on its request.

In the node's network namespace (a Mininet host) it makes a bridge ``br0`` of the
outside and inside interfaces, sends bridged IPv4 and IPv6 through netfilter
(``bridge-nf-call-iptables``, ``-ip6tables``), sets TCP window tracking's switches as the
Python node's (``nf_conntrack_tcp_be_liberal`` and ``nf_conntrack_tcp_loose``,
both off unless ``--tcp-liberal``, ``--tcp-loose``: a connection is opened by its
SYN only, and an out-of-window segment is ``ct state invalid``), loads the ruleset made from the rule
file (nodes/kernel/nft.py) and starts conntrackd in the foreground as its child
(nodes/kernel/conntrackd.py: its own lock file and UNIX socket).

Failure detection: conntrackd sends no heartbeats the controller could hear, so
the agent sends the project's HEARTBEAT to the controller every ``heartbeat``
seconds, from a thread of its own, and only while the node can carry traffic:
its conntrackd (if any) runs and br0, eth0 and eth1 are up. A crashed node
(topo/faults.py stops the agent and conntrackd, and takes the bridge down)
stops them; so does a dead conntrackd.

Commit: the controller sends COMMIT (authenticated, fresh: a counter that only
grows within the controller's incarnation) to the node that takes a failed
node's traffic; the agent runs ``conntrackd -c`` (the external cache into the
kernel table, as keepalived's primary-backup.sh does) and answers COMMIT_DONE.

The event log (nodes/kernel/watch.py, ``--events``): the connections the kernel
admitted and the packets the ruleset dropped, in the Python node's shape.

The control socket answers ping, stats (nftables counters by reason, conntrackd
-s, the kernel table's size), dump (``conntrack -L``) and refuses what a kernel
node cannot do, in one line.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from nodes import syncproto as sp
from nodes.kernel import conntrackd as ctd
from nodes.kernel import nft
from nodes.kernel.watch import KernelEvents, stop_child
from nodes.observe.client import socket_path
from nodes.rules import RuleError, RuleSet
from nodes.settings import SettingsError, firewall_change
from nodes.shell import config as cluster_config
from nodes.shell.control_server import ControlServer
from nodes.shell.ports import link_up
from nodes.sync import SETTLED

BRIDGE = "br0"
CONTROL_BUDGET = 0.002


def sh(*cmd: str, check: bool = True) -> str:
    """Run one command in this namespace; its stdout, or RuntimeError with stderr."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def sysctl(key: str, value: str) -> None:
    """Write one sysctl of this namespace; RuntimeError in one line if it cannot be."""
    try:
        with open("/proc/sys/" + key.replace(".", "/"), "w", encoding="ascii") as fh:
            fh.write(value)
    except OSError as err:
        raise RuntimeError(f"sysctl {key}={value}: {err.strerror} (br_netfilter and "
                           "nf_conntrack are needed for kernel nodes)") from None


def set_up(outside: str, inside: str, ruleset: str, liberal: bool = False,
           loose: bool = False) -> None:
    """The bump in the wire: br0 of outside and inside, filtered by nftables."""
    sh("ip", "link", "del", BRIDGE, check=False)
    sh("ip", "link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0",
       "mcast_snooping", "0")
    for intf in (outside, inside):
        sh("ip", "link", "set", intf, "master", BRIDGE, "up")
    sh("ip", "link", "set", BRIDGE, "up")
    sh("modprobe", "-q", "br_netfilter", check=False)  # present here; elsewhere maybe a module
    for key, value in (("net.bridge.bridge-nf-call-iptables", "1"),
                       ("net.bridge.bridge-nf-call-ip6tables", "1"),  # IPv6 too
                       ("net.bridge.bridge-nf-call-arptables", "0"),
                       ("net.netfilter.nf_conntrack_tcp_loose", "01"[loose]),
                       ("net.netfilter.nf_conntrack_tcp_be_liberal", "01"[liberal]),
                       ("net.netfilter.nf_conntrack_acct", "1")):  # packets and bytes
        sysctl(key, value)
    proc = subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nft refused the ruleset: {proc.stderr.strip()}")


def tear_down() -> None:
    """Leave the namespace as it was: no bridge, no tables, an empty conntrack table."""
    sh("ip", "link", "del", BRIDGE, check=False)
    sh("nft", "delete", "table", "inet", nft.TABLE, check=False)
    sh("nft", "delete", "table", "bridge", nft.L2_TABLE, check=False)
    sh("conntrack", "-F", check=False)


class Agent:
    """The agent's state: conntrackd, the beacon, the control socket, commits."""

    def __init__(self, args, rules: RuleSet):
        self.name, self.rules = args.name, rules
        self.loose = args.tcp_loose
        self.ports = (args.outside, args.inside)
        self.started = time.monotonic()
        self.counters = {"commits": 0, "commit_errors": 0, "heartbeats_sent": 0,
                         "heartbeats_withheld": 0, "rejected": 0}
        self.config = cluster_config.load(args.sync_config) if args.sync_config else None
        raw = {}
        if args.sync_config:
            with open(args.sync_config, encoding="utf-8") as fh:
                raw = json.load(fh)
        self.mode = raw.get("conntrackd")  # None: no conntrackd (sync none)
        self.external_cache = raw.get("external_cache", True)
        self.commit = raw.get("commit", "before_steer")  # at a rejoin too, unless "never"
        self.boot = int.from_bytes(os.urandom(8), "big") >> 1 or 1
        self.rx_start = self.port_packets()  # the veths outlive a restart: count from here
        self.controller_seen: dict[int, int] = {}  # controller incarnation -> last counter
        self.conntrackd = None
        self.reported_exit = False
        self.conf = None
        run = os.path.dirname(socket_path(args.run_id, args.name))
        if self.mode:
            me = self.config.me(self.name)
            self.conf = os.path.join(run, f"{self.name}.conntrackd.conf")
            with open(self.conf, "w", encoding="utf-8") as fh:
                fh.write(ctd.config(self.mode, self.name, self.config.addresses[me],
                                    f"{self.name}-eth2",
                                    os.path.join(run, f"{self.name}.conntrackd.lock"),
                                    os.path.join(run, f"{self.name}.conntrackd.sock"),
                                    os.path.join(args.logs or run, f"{self.name}.conntrackd.log"),
                                    int(raw.get("settings", {}).get("interval", 1)),
                                    raw.get("external_cache", True),
                                    raw.get("settings", {}).get("window_sync", "off")))
        self.sock = None
        if self.config is not None:
            me = self.config.me(self.name)
            self.me = me
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((self.config.addresses[me], sp.PORT))
            self.sock.setblocking(False)
        self.control = ControlServer(args.control or socket_path(args.run_id, args.name),
                                     self.answer, self.dump_parts)
        self.events = KernelEvents(args.events, self.name) if args.events else None
        self.running = True

    # -- conntrackd ---------------------------------------------------------
    def start_conntrackd(self, resync: bool) -> None:
        if not self.mode:
            return
        for stale in (".lock", ".sock"):
            path = self.conf.replace(".conf", stale)
            if os.path.exists(path):
                os.unlink(path)  # a crashed predecessor's (its process is gone)
        self.conntrackd = subprocess.Popen(["conntrackd", "-C", self.conf],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while not os.path.exists(self.conf.replace(".conf", ".sock")):
            if self.conntrackd.poll() is not None:
                raise RuntimeError("conntrackd exited: "
                                   + self.conntrackd.stderr.read().decode(errors="replace").strip())
            if time.monotonic() > deadline:
                raise RuntimeError("conntrackd did not open its UNIX socket within 5 s")
            time.sleep(0.01)
        if resync and self.mode in ("ftfw", "notrack"):
            self.ctl("-n")  # ask the others for their state (a rejoin's bulk resync)
            if self.external_cache and self.commit != "never":
                self.commit_resync()

    def commit_resync(self) -> None:
        """A rejoining node takes its buckets back at its first heartbeat: its kernel
        must hold their connections by then, as keepalived's notify-master commits.
        The resync lands in the external cache; once it has arrived, it is committed."""
        start, counts = time.monotonic(), []
        while True:
            counts.append(ctd.external_entries(ctd.parse_stats(self.ctl("-s"))))
            if ctd.resync_settled(counts, time.monotonic() - start):
                break
            time.sleep(ctd.RESYNC_POLL)
        self.ctl("-c")
        self.counters["commits"] += 1
        self.own_committed()
        self.counters["resync_entries"] = counts[-1]
        self.counters["resync_ms"] = round((time.monotonic() - start) * 1000, 1)

    def ctl(self, *args: str) -> str:
        """A conntrackd client command to this node's daemon."""
        return sh("conntrackd", "-C", self.conf, *args)

    def healthy(self) -> bool:
        if self.conntrackd is not None and self.conntrackd.poll() is not None:
            return False
        return all(link_up(self.sock, i) for i in (BRIDGE, *self.ports))

    # -- the beacon -------------------------------------------------------------
    def beacon(self) -> None:
        """HEARTBEATs to the controller while the node can carry traffic."""
        cfg = self.config
        if cfg is None or not cfg.controller:
            return
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        out.bind((cfg.addresses[self.me], 0))
        seq = 0
        while self.running:
            if self.healthy():
                seq += 1
                msg = sp.Message(sp.HEARTBEAT, self.me, 0, self.boot, seq, members=[self.me],
                                 ready=True)
                try:
                    out.sendto(sp.encode(msg, cfg.key), (cfg.controller, sp.PORT))
                    self.counters["heartbeats_sent"] += 1
                except OSError:
                    pass
                else:
                    if self.counters["heartbeats_sent"] == 1:
                        self.log_ready()
            else:
                self.counters["heartbeats_withheld"] += 1
            time.sleep(cfg.settings.heartbeat)

    def log_ready(self) -> None:
        """The Python node's ``ready`` event (method 700): this node has its state (a
        restart's resync committed) and the controller may steer to it from now."""
        if self.events is not None:
            self.events.write({
                "t": time.time(), "node": self.name, "event": "ready",
                "after_ms": round((time.monotonic() - self.started) * 1000, 3),
                "records": self.counters.get("resync_entries", 0),
                "timed_out": self.counters.get("resync_ms", 0) >= ctd.RESYNC_MAX * 1000})

    def port_packets(self) -> dict[str, int]:
        """Frames received so far on the outside and inside ports, by port name."""
        try:
            with open("/proc/net/dev", encoding="ascii") as fh:
                return ctd.interface_packets(fh.read(), self.ports)
        except OSError:
            return {port: 0 for port in self.ports}

    def packets_in(self) -> dict[str, int]:
        """Frames received on the outside and inside ports since the agent started."""
        now = self.port_packets()
        return {side: now[port] - self.rx_start[port]
                for side, port in zip(("outside", "inside"), self.ports)}

    # -- commits ------------------------------------------------------------------
    def receive(self) -> None:
        while True:
            try:
                data, sender = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            try:
                msg = sp.decode(data, self.config.key)
            except sp.Reject:
                self.counters["rejected"] += 1
                continue
            if msg.type != sp.COMMIT or msg.sender != 0 or msg.receiver != self.me:
                self.counters["rejected"] += 1
                continue
            if msg.seq <= self.controller_seen.get(msg.boot, 0):
                self.counters["rejected"] += 1  # a replay of a request already done
                continue
            self.controller_seen[msg.boot] = msg.seq
            status = 0
            try:
                self.ctl("-c")
                self.counters["commits"] += 1
            except RuntimeError as err:
                status = 1
                self.counters["commit_errors"] += 1
                print(f"fw-kernel-node {self.name}: commit failed: {err}", file=sys.stderr,
                      flush=True)
            reply = sp.Message(sp.COMMIT_DONE, self.me, 0, self.boot, msg.seq,
                               to_boot=msg.boot, query=status)
            self.sock.sendto(sp.encode(reply, self.config.key), sender)
            if status == 0:
                self.own_committed()  # after the answer: steering does not wait for it

    def own_committed(self) -> None:
        """What conntrackd's primary-backup.sh does after its commit, so that the
        connections just committed are this node's own: its internal cache is
        rebuilt from the kernel table (-f internal, -R) and sent to the others (-B).
        Without it they stay out of the internal cache, and a node that rejoins and
        asks for a resync does not get them. (The script flushes the external cache
        too; here other nodes still own connections there, so it stays.)"""
        for args in (("-f", "internal"), ("-R",), ("-B",)):
            try:
                self.ctl(*args)
            except RuntimeError as err:
                self.counters["commit_errors"] += 1
                print(f"fw-kernel-node {self.name}: conntrackd {' '.join(args)} failed: {err}",
                      file=sys.stderr, flush=True)

    # -- the control socket ---------------------------------------------------------
    def ready(self) -> bool:
        """The controller has been told it lives (the bridge takes ~0.6 s to come up; a
        node crashed before its first heartbeat was never heard of)."""
        return self.config is None or not self.config.controller or \
            self.counters["heartbeats_sent"] > 0

    def answer(self, command: str) -> dict:
        if command == "ping":
            return {"node": self.name, "pid": os.getpid(), "kind": "kernel"}
        if command == "members":  # what a runner polls until the node is ready; conntrackd
            # keeps no view of the cluster's members (alive: None, as a node without sync)
            return {"node": self.name, "alive": None, "ready": self.ready()}
        if command == "stats":
            listing = sh("nft", "-j", "list", "counters", check=False) or '{"nftables": []}'
            counts = nft.read_counters(listing)
            drops = nft.drops(counts)
            stats = {"node": self.name, "kind": "kernel", "pid": os.getpid(),
                     "entries": self.kernel_entries(), "drops": drops,
                     "expectations": len(ctd.parse_expectations(
                         sh("conntrack", "-L", "expect", check=False))),
                     "held_connections": 0,  # conntrackd has no hold
                     "accepted_by_rule": {n: c["packets"] for n, c in counts.items()
                                          if n.startswith("rule_")},
                     "counters": {**self.counters,
                                  **(self.events.counters if self.events else {})},
                     "conntrackd": self.mode, "packets_in": self.packets_in(),
                     "uptime": round(time.monotonic() - self.started, 3)}
            stats["sync"] = {"ready": self.ready(), "mode": self.mode}
            if self.mode:
                parsed = ctd.parse_stats(self.ctl("-s"))
                stats["sync"]["conntrackd"] = parsed
                stats["sync"]["counters"] = ctd.sync_counters(parsed)
                stats["sync"].update(self.ownership(parsed))
            return stats
        if command.startswith("set "):
            return self.set(command[4:])
        if command == "config":
            conf = None
            if self.conf:
                with open(self.conf, encoding="utf-8") as fh:
                    conf = fh.read()
            return {"node": self.name, "kind": "kernel", "conntrackd": self.mode, "conf": conf,
                    "firewall": self.firewall()}
        return {"error": f"{command.split()[0] if command else command!r}: not on a kernel "
                         "node (it answers ping, members, stats, dump, config)"}

    def ownership(self, parsed: dict) -> dict:
        """The Python node's ownership figures, from conntrackd's caches: its own
        connections are its internal cache, every other node is a backup (conntrackd
        replicates to all). Whose a copy in the external cache is, conntrackd does not
        say: only with one other node is ``backup_of`` exact, so only then is it given."""
        others = [n for i, n in sorted(self.config.names.items()) if i != self.me]
        out = {"entries_owned": ctd.internal_entries(parsed), "backup_nodes": others}
        if self.events is not None:  # as a Python node's: leave out the last SETTLED s
            young = self.events.admitted_since(time.monotonic() - SETTLED)
            out["entries_owned_settled"] = max(0, out["entries_owned"] - young)
        if len(others) == 1:  # the copies: the external cache, or without it the kernel's rest
            copies = ctd.external_entries(parsed) if self.external_cache else \
                max(0, self.kernel_entries() - out["entries_owned"])
            out["backup_of"] = {others[0]: copies}
        return out

    def set(self, args: str) -> dict:
        """``set tcp_liberal=on|off``: the sysctl, at once. Nothing else can change on a
        running kernel node (tcp_loose changes the ruleset, which would reset its
        counters: start the node with it; conntrackd's settings are in its config)."""
        try:
            switches, rest = firewall_change(args)
        except SettingsError as err:
            return {"error": str(err)}
        other = [n for n in switches if n != "tcp_liberal"]
        if rest or other:
            what = (rest.split() or other)[0]
            return {"error": f"set {what}: not on a kernel node, which takes only "
                             "tcp_liberal at run time (start it with the rest)"}
        try:
            if "tcp_liberal" in switches:
                sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", "01"[switches["tcp_liberal"]])
        except RuntimeError as err:
            return {"error": str(err)}
        return {"ok": True, "sync": None, "firewall": self.firewall()}

    def firewall(self) -> dict:
        """The TCP switches in force, as a Python node's ``config`` names them."""
        return {"tcp_liberal": self.liberal(), "tcp_loose": self.loose, "tcp_window_check": True}

    def liberal(self) -> bool:
        with open("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", encoding="ascii") as fh:
            return fh.read().strip() == "1"

    def kernel_entries(self) -> int:
        try:
            with open("/proc/sys/net/netfilter/nf_conntrack_count", encoding="ascii") as fh:
                return int(fh.read())
        except OSError:
            return len(ctd.parse_conntrack(sh("conntrack", "-L", check=False)))

    def dump_parts(self):
        """conntrack -L and conntrack -L expect in this namespace: the kernel's table (a
        node's own entries and, without an external cache, the others' too)."""
        entries = ctd.parse_conntrack(sh("conntrack", "-L", check=False), self.name)
        expectations = ctd.parse_expectations(sh("conntrack", "-L", "expect", check=False),
                                              self.name)
        caches = {}
        if self.mode:  # conntrackd's caches, for the consistency check
            caches = {"internal": ctd.parse_conntrack(self.ctl("-i", "ct"), self.name),
                      "external": ctd.parse_conntrack(self.ctl("-e", "ct"), None),
                      "external_cache": self.external_cache}
        yield json.dumps({"node": self.name, "kind": "kernel", "entries": entries,
                          "expectations": expectations, "common": [], **caches})

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> None:
        control = self.control
        watch = [self.sock] if self.sock is not None else []
        while self.running:
            try:
                readable, writable, _ = select.select(watch + control.readers(),
                                                      control.writers(), [],
                                                      0.0 if control.busy else 0.2)
            except InterruptedError:
                continue
            now = time.monotonic()
            for sock in readable:
                if sock is self.sock:
                    self.receive()
                else:
                    control.readable(sock, now)
            for sock in writable:
                control.writable(sock, now)
            control.work(CONTROL_BUDGET)
            control.expire(now)
            if (self.conntrackd is not None and self.conntrackd.poll() is not None
                    and not self.reported_exit):
                self.reported_exit = True  # healthy() is False from now: no more heartbeats
                print(f"fw-kernel-node {self.name}: conntrackd exited "
                      f"({self.conntrackd.returncode}); no more heartbeats", file=sys.stderr,
                      flush=True)

    def goodbye(self) -> None:
        """A last heartbeat that names no member: a graceful leave (the controller moves
        the node's buckets at once, as for a Python node's goodbye)."""
        cfg = self.config
        if cfg is None or not cfg.controller:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            msg = sp.Message(sp.HEARTBEAT, self.me, 0, self.boot, 1 << 31, members=[],
                             ready=True)
            try:
                out.sendto(sp.encode(msg, cfg.key), (cfg.controller, sp.PORT))
            except OSError:
                pass

    def close(self) -> None:
        self.running = False
        self.goodbye()
        if self.events is not None:
            self.events.close()
        stop_child(self.conntrackd, 5)
        self.control.close()
        if self.sock is not None:
            self.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fw-kernel-node", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--outside", required=True)
    parser.add_argument("--inside", required=True)
    parser.add_argument("--rules", required=True)
    parser.add_argument("--run-id", default="default")
    parser.add_argument("--control")
    parser.add_argument("--logs", help="folder for conntrackd's log")
    parser.add_argument("--sync-config")
    parser.add_argument("--events", help="JSON-lines event log: connections admitted, drops")
    parser.add_argument("--tcp-liberal", action="store_true",
                        help="nf_conntrack_tcp_be_liberal=1: pass out-of-window segments")
    parser.add_argument("--tcp-loose", action="store_true",
                        help="nf_conntrack_tcp_loose=1: a bare ACK may open a connection")
    parser.add_argument("--resync", action="store_true",
                        help="a restart: ask the other nodes for their state (conntrackd -n)")
    args = parser.parse_args(argv)
    try:
        rules = RuleSet.from_file(args.rules)
        agent = Agent(args, rules)
    except (RuleError, SettingsError, OSError, KeyError, ValueError) as err:
        print(f"fw-kernel-node: {err}", file=sys.stderr)
        return 2
    try:
        set_up(args.outside, args.inside, nft.ruleset(rules, args.tcp_loose), args.tcp_liberal,
               args.tcp_loose)
        if agent.events is not None:
            agent.events.start()  # before traffic is let in: nothing goes unlogged
        agent.start_conntrackd(args.resync)
    except RuntimeError as err:
        print(f"fw-kernel-node {args.name}: {err}", file=sys.stderr)
        agent.close()
        tear_down()
        return 2

    def stop(_signum, _frame):
        agent.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=agent.beacon, name="beacon", daemon=True).start()
    print(f"fw-kernel-node {args.name}: bridging {args.outside} <-> {args.inside}, "
          f"{len(rules.rules)} rules in nftables, conntrackd {agent.mode or 'off'}", flush=True)
    try:
        agent.run()
    finally:
        agent.close()
        tear_down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
