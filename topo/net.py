"""Bring a firewall cluster up under Mininet and take it down, whatever happens.

``Cluster`` is a context manager: it checks the machine, cleans leftovers,
starts Open vSwitch if needed, the steering controller, the Mininet network
and one firewall node process per node; on exit (also on error) it stops
every process it started, stops the network and removes what is left.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from controller.steering import COOKIE, ClusterSpec, SwitchSpec
from nodes.observe.client import RUN_ROOT, ask, set_current_run, socket_path
from topo.addresses import (HOST_PORT_BASE, client_mac, controller_sync_ip, offload_args,
                            server_mac, sync_ip)
from topo.cluster import FirewallClusterTopo, datapath
from topo import capture
from topo.errors import SetupError
from topo.procs import Proc, kill_pidfiles, stop_all, wait_until

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
CONTROLLER_SYNC_IP = controller_sync_ip()  # the controller's ear on the sync network


class EventLog:
    """The run's event log: one JSON object a line, each with its wall time."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")

    def __call__(self, event: str, **fields) -> None:
        self.fh.write(json.dumps({"t": round(time.time(), 6), "event": event, **fields}) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def check_machine() -> None:
    """Raise SetupError unless this is root with Mininet and Open vSwitch usable."""
    if os.geteuid() != 0:
        raise SetupError("Mininet needs root: run as root (sudo make demo)")
    for tool in ("ovs-vsctl", "ovs-ofctl", "mnexec", "ethtool"):
        if shutil.which(tool) is None:
            raise SetupError(f"{tool} not found: run 'make setup' to install Mininet and Open vSwitch")
    ensure_ovs()


def ensure_ovs() -> None:
    """Start Open vSwitch unless its daemons already answer."""
    if subprocess.run(["ovs-vsctl", "--timeout=2", "show"], capture_output=True).returncode == 0:
        return
    subprocess.run([OVS_CTL, "start", "--system-id=random"], capture_output=True, timeout=60)
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode != 0:
        raise SetupError(f"Open vSwitch does not start: try '{OVS_CTL} start' and read its output")


# True after this process stopped a cluster without a hitch: nothing is left over, so
# the next cluster (the next point of a campaign) can skip 'mn -c' (about a second).
_stopped_cleanly = False


# What a cluster makes, by name: host shells (Mininet's "mininet:NAME"), the links of
# its hosts and switches in the root namespace, and its switches (OVS s1 and s2, the
# kernel bridge s3). The names are fixed: one cluster runs on a machine at a time.
OUR_HOST = r"(?:c|srv|fw)\d+|s[123]"
OUR_SHELL = re.compile(rf"\bmininet:(?:{OUR_HOST})$")
OUR_LINK = re.compile(rf"^(?:{OUR_HOST})-eth\d+$")


def clean_leftovers(full: bool = False) -> None:
    """Remove what a crashed run left: the processes any run of the project recorded
    (its pid files under RUN_ROOT; a killed runner never stopped them, and a leftover
    controller keeps the heartbeat port), then this project's host shells, links and
    switches, by name, and nothing else: other Mininet networks, other Open vSwitch
    bridges and other files in /tmp stay. ``full`` runs Mininet's own 'mn -c' too
    ('make clean'), which stops every Mininet network and deletes /tmp/*.log."""
    if os.path.isdir(RUN_ROOT):
        for run in os.listdir(RUN_ROOT):
            kill_pidfiles(os.path.join(RUN_ROOT, run, "pids"))
    if full:
        from mininet.clean import cleanup
        from mininet.log import setLogLevel
        setLogLevel("error")
        cleanup()
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for line in ps.splitlines():
        pid, _, args = line.strip().partition(" ")
        if OUR_SHELL.search(args.strip()):
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
    for bridge in ("s1", "s2"):
        subprocess.run(["ovs-vsctl", "--timeout=5", "--if-exists", "del-br", bridge],
                       capture_output=True)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if OUR_LINK.match(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    # the sync network is a kernel bridge
    subprocess.run(["ip", "link", "del", "s3", "type", "bridge"], capture_output=True)


def stop_host_processes(hosts) -> list[str]:
    """End every process still running in one of ``hosts``' network namespaces (a
    user's 'srv1 vsftpd &', or one a node left), each by its id, other than the
    host's own shell; return "host: command (pid)" of each."""
    spaces = {}
    ours = os.readlink("/proc/self/ns/net")  # a host outside a namespace shares ours: skip it
    for host in hosts:
        try:
            space = os.readlink(f"/proc/{host.pid}/ns/net")
        except (OSError, AttributeError, TypeError):
            continue
        if space != ours:
            spaces[space] = host
    shells = {getattr(h, "pid", None) for h in hosts}
    stopped = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in shells or int(entry) == os.getpid():
            continue
        try:
            host = spaces.get(os.readlink(f"/proc/{entry}/ns/net"))
            if host is None:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            os.kill(int(entry), 9)
            stopped.append(f"{host.name}: {cmd[:60] or '?'} ({entry})")
        except (OSError, ValueError):
            continue  # gone meanwhile
    return stopped


@functools.cache
def netem_available() -> bool:
    """Whether this kernel can delay packets with netem (tried on a dummy link)."""
    ns = f"fwc-netem-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], capture_output=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "add", "d0", "type", "dummy"],
                       capture_output=True)
        return subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "d0", "root", "netem",
                               "delay", "1ms"], capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


LATENCY_VIA = ("auto", "netem", "node")
NODE_KINDS = ("python", "kernel")
COMMIT_ORDERS = ("before_steer", "after_steer", "never")
STEERING = ("symmetric", "addresses", "asymmetric")  # how the switches hash (controller/steering.py)


def listening_controller(remote_controller):
    """Mininet's RemoteController, asked whether it listens with a TCP connect.

    Mininet asks through telnet and reads the binary OpenFlow greeting as text:
    about one cluster start in 33 failed with UnicodeDecodeError there."""
    class ListeningController(remote_controller):
        def isListening(self, ip, port):  # noqa: N802 (Mininet's name)
            with socket.socket() as sock:
                sock.settimeout(2)
                return sock.connect_ex((ip, port)) == 0

    return ListeningController


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def steering_spec(n: int, clients: int, servers: int, buckets: int = 64,
                  asymmetric: bool = False, by_addresses: bool = False) -> ClusterSpec:
    """What the controller must know about the topology FirewallClusterTopo builds."""
    nodes = [f"fw{i}" for i in range(1, n + 1)]
    ports = {node: i for i, node in enumerate(nodes, 1)}
    outside = {client_mac(i): HOST_PORT_BASE + i for i in range(1, clients + 1)}
    inside = {server_mac(i): HOST_PORT_BASE + i for i in range(1, servers + 1)}
    return ClusterSpec(nodes, {1: SwitchSpec("s1", "outside", ports, outside),
                               2: SwitchSpec("s2", "inside", dict(ports), inside)}, buckets,
                       asymmetric, by_addresses)


class Cluster:
    """A running firewall cluster: Mininet network, controller and nodes."""

    def __init__(self, run_dir: str, rules: str, n: int = 3, clients: int = 2,
                 servers: int = 2, run_id: str | None = None, log: EventLog | None = None,
                 established_timeout: float = 432000.0, sync: dict | None = None,
                 failover: str | None = None, steering: str = "symmetric",
                 latency: float = 0.0, latency_via: str = "auto",
                 capture: list[str] | None = None, metrics_port: int | None = None,
                 checksum: bool = True, node_args: list[str] | None = None,
                 node: str = "python", commit: str = "before_steer",
                 conntrackd: str | None = None, external_cache: bool = True,
                 tcp_liberal: bool = False, tcp_loose: bool = False,
                 tcp_window_check: bool = True, time_wait_timeout: float = 120.0,
                 fastpath: str | None = None):
        if node not in NODE_KINDS:
            raise SetupError(f"node {node!r}: use one of {', '.join(NODE_KINDS)}")
        if commit not in COMMIT_ORDERS:
            raise SetupError(f"commit {commit!r}: use one of {', '.join(COMMIT_ORDERS)}")
        # "kernel": nftables + conntrack + conntrackd nodes (nodes/kernel/), the real
        # thing beside the Python nodes; commit: when the controller has the nodes that
        # take a failed node's traffic commit conntrackd's external cache
        self.kind, self.commit, self.conntrackd = node, commit, conntrackd
        self.external_cache = external_cache  # kernel nodes: conntrackd's external cache
        self.conntrackd_mode = None
        self.run_dir = os.path.abspath(run_dir)
        self.rules = os.path.abspath(rules)
        self.n, self.clients, self.servers = n, clients, servers
        self.run_id = run_id or f"fwc-{os.getpid()}-{int(time.time())}"
        self.log = log or EventLog(os.path.join(self.run_dir, "events.jsonl"))
        self.established_timeout = established_timeout
        self.time_wait_timeout = time_wait_timeout  # Python nodes' TIME_WAIT timeout
        self.checksum = checksum  # False: the nodes trust checksums (--no-checksum)
        # the firewall's TCP switches (nf_conntrack_tcp_be_liberal, _loose), kept as they
        # are set at run time so that a restarted node starts with them
        self.tcp = {"tcp_liberal": tcp_liberal, "tcp_loose": tcp_loose,
                    "tcp_window_check": tcp_window_check}
        # Python nodes' kernel fast path: "on", "off" (made, switched at run time) or None
        if fastpath not in (None, "on", "off"):
            raise SetupError(f"fastpath {fastpath!r}: use on, off or none")
        if fastpath is not None and node == "kernel":
            raise SetupError("fastpath: kernel nodes forward in the kernel already; "
                             "it is a Python node's switch")
        self.fastpath = fastpath
        self.node_args = list(node_args or [])  # more fw-node options (benchmarks)
        self.sync = dict(sync or {})  # SyncConfig fields and hold_timeout; mode "none": no sync
        if node == "kernel":
            from nodes.kernel.conntrackd import check_cache, check_window_check, conntrackd_mode
            from nodes.settings import SettingsError
            if steering != "symmetric":
                raise SetupError("kernel nodes need symmetric steering (conntrack sees both "
                                 "directions of a connection on one node)")
            try:
                self.conntrackd_mode = conntrackd_mode(self.sync, n, conntrackd)
                check_cache(self.conntrackd_mode, external_cache)
                check_window_check(tcp_window_check)
            except SettingsError as err:
                raise SetupError(f"node = \"kernel\": {err}") from None
        elif conntrackd is not None:
            raise SetupError("conntrackd is a setting of kernel nodes: set node \"kernel\"")
        self.failover = failover  # "backup" or "spread": the controller follows membership
        if steering not in STEERING:
            raise SetupError(f"steering {steering!r} unknown (use {', '.join(STEERING)})")
        self.asymmetric = steering == "asymmetric"
        self.by_addresses = steering == "addresses"
        # One-way delay between nodes on the cluster network (geographically
        # separated nodes): netem on each node's sync link where the kernel has
        # it, else the node's own delay line (nodes/delayline.py).
        if latency < 0 or latency_via not in LATENCY_VIA:
            raise SetupError(f"latency {latency} s via {latency_via!r}: need latency >= 0 "
                             f"and via one of {', '.join(LATENCY_VIA)}")
        self.latency, self.latency_via = latency, latency_via
        # pcap files under run_dir/pcap: "sync" (the cluster network, every message
        # once) and any host interface by name ("c1-eth0", "fw2-eth1").
        self.capture = list(capture or [])
        self.metrics_port = metrics_port  # Prometheus: nodes here, the controller at +1
        self.metrics_url = None
        self.exporter = None
        self.logs = os.path.join(self.run_dir, "logs")
        self.pids = os.path.join(RUN_ROOT, self.run_id, "pids")
        self.procs: dict[str, Proc] = {}
        self.hung: set[str] = set()  # nodes stopped by hang_node, not yet resumed
        self.net = None
        self.sync_config = None
        self.datapath = datapath()

    # -- lifecycle -------------------------------------------------------
    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import RemoteController
        global _stopped_cleanly
        check_machine()
        if not _stopped_cleanly:
            clean_leftovers()
        _stopped_cleanly = False
        setLogLevel("error")
        os.makedirs(self.logs, exist_ok=True)
        set_current_run(self.run_id)
        if self.latency > 0:
            self.latency_via = self._latency_mechanism()
        spec_path = os.path.join(self.run_dir, "steering.json")
        with open(spec_path, "w", encoding="utf-8") as fh:
            fh.write(steering_spec(self.n, self.clients, self.servers,
                                   asymmetric=self.asymmetric,
                                   by_addresses=self.by_addresses).to_json())
        self.sync_config = self.write_sync_config()
        self.controller_port = free_port()
        # the controller's start is mostly Ryu's imports: the network is built meanwhile,
        # and the controller joins it (Mininet asks it whether it listens) once it listens
        ctl = self.start_controller(wait=False)
        topo = FirewallClusterTopo(n=self.n, clients=self.clients, servers=self.servers)
        self.net = Mininet(topo=topo, controller=None, autoSetMacs=False, build=False)
        self.net.build()
        self.wait_controller(ctl)
        self.net.addController("c0", controller=listening_controller(RemoteController),
                               ip="127.0.0.1", port=self.controller_port)
        self.net.start()
        self.log("network_up", nodes=self.n, datapath=self.datapath)
        self._fast_reconnect()
        if self.failover:
            self._controller_on_sync_network()
        if self.latency > 0:
            if self.latency_via == "netem":
                for name in self.node_names():
                    out = self.net[name].cmd("tc qdisc add dev", f"{name}-eth2", "root netem delay",
                                             f"{self.latency * 1000:.3f}ms")
                    if out.strip():
                        raise SetupError(f"netem refused the delay on {name}-eth2: {out.strip()}")
            self.log("cluster_latency", one_way_ms=self.latency * 1000, via=self.latency_via)
        for sw in ("s1", "s2"):
            wait_until(lambda sw=sw: self.flow_count(sw) > 0 or self._died(ctl), 20,
                       f"the controller to install flows on {sw}")
        self._died(ctl)
        capture.start(self)
        self.start_nodes(self.node_names())
        self.wait_ready()
        if self.metrics_port:
            from nodes.observe.exporter import NodeExporter
            self.exporter = NodeExporter(self, self.metrics_port)
            self.metrics_url = (f"nodes {self.exporter.url}, controller "
                                f"http://127.0.0.1:{self.metrics_port + 1}/metrics")
        self.log("cluster_up", nodes=self.n, sync=self.sync.get("mode", "none"))

    def _latency_mechanism(self) -> str:
        """netem where the kernel has it, else the nodes' delay line; asked-for netem must exist."""
        if self.sync.get("mode", "none") == "none" and not self.failover:
            raise SetupError("an inter-node latency needs a cluster network: set a sync mode")
        if self.latency_via == "node":
            return "node"
        if netem_available():
            return "netem"
        if self.latency_via == "netem":
            raise SetupError("this kernel has no netem (sch_netem): use latency_via 'node' or 'auto'")
        return "node"

    def start_controller(self, wait: bool = True) -> Proc:
        """Start the steering controller and (``wait``) wait until it listens."""
        env = {"FWCLUSTER_STEERING": os.path.join(self.run_dir, "steering.json"),
               "FWCLUSTER_EVENTS": os.path.join(self.run_dir, "controller.events.jsonl")}
        if self.failover and self.sync_config:
            env.update(FWCLUSTER_SYNC=self.sync_config, FWCLUSTER_FAILOVER=self.failover)
            if self.kind == "kernel":
                env["FWCLUSTER_COMMIT"] = self.commit
        if self.metrics_port:
            env["FWCLUSTER_METRICS"] = f"127.0.0.1:{self.metrics_port + 1}"
        self.log("controller_start", port=self.controller_port, failover=self.failover)
        ctl = self.spawn("controller", [sys.executable, "-m", "controller.manager",
                                        "--ofp-listen-host", "127.0.0.1",
                                        "--ofp-tcp-listen-port", str(self.controller_port)],
                         env=env)
        if wait:
            self.wait_controller(ctl)
        return ctl

    def wait_controller(self, ctl: Proc) -> None:
        wait_until(lambda: self._listening(self.controller_port) or self._died(ctl), 20,
                   "the controller to listen")

    def _fast_reconnect(self) -> None:
        """Switches retry a lost controller every 0.5 s at most (not OVS's 8 s)."""
        out = subprocess.run(["ovs-vsctl", "--columns=_uuid", "--bare", "list", "controller"],
                             capture_output=True, text=True).stdout.split()
        for uuid in out:
            subprocess.run(["ovs-vsctl", "set", "controller", uuid, "max_backoff=500"],
                           capture_output=True)

    def _controller_on_sync_network(self) -> None:
        """The sync bridge's own address, where the controller hears the heartbeats."""
        for cmd in (["ip", "addr", "add", f"{CONTROLLER_SYNC_IP}/24", "dev", "s3"],
                    ["ip", "link", "set", "s3", "up"]):
            subprocess.run(cmd, capture_output=True)

    def write_sync_config(self) -> str | None:
        """The sync config every node reads, and a fresh cluster key (mode 0600)."""
        if self.sync.get("mode", "none") == "none" and not self.failover:
            return None
        key_file = os.path.join(self.run_dir, "cluster.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(32))
        settings = {"mode": "none", **self.sync}
        if self.latency > 0 and settings["mode"] == "home":  # the deadline outlasts a round trip
            settings.setdefault("query_timeout", 0.05 + 2 * self.latency)
        path = os.path.join(self.run_dir, "sync.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"names": {i: f"fw{i}" for i in range(1, self.n + 1)},
                       "addresses": {i: sync_ip(i) for i in range(1, self.n + 1)},
                       "key_file": key_file, "settings": settings,
                       "cluster_delay": self.latency if self.latency_via == "node" else 0.0,
                       **({"kind": "kernel", "conntrackd": self.conntrackd_mode,
                           "external_cache": self.external_cache, "commit": self.commit}
                          if self.kind == "kernel" else {}),
                       **({"controller": CONTROLLER_SYNC_IP} if self.failover else {})},
                      fh, indent=2)
        return path

    def set_sync(self, args: str, nodes: list[str]) -> dict:
        """Change the sync settings of ``nodes`` at run time ("mode=periodic interval=2"),
        and of the cluster's sync config, so a node started later starts with them.
        Return the settings in force; raise ValueError (one line) for a bad setting."""
        settings = None
        for name in nodes:  # the nodes are alike: a bad setting fails on the first
            answer = self.ask(name, "set " + args)
            if "error" in answer:
                raise ValueError(answer["error"])
            settings = answer["sync"]
            switches = dict(answer.get("firewall") or {})
            if switches.pop("fastpath", None) is not None and self.fastpath is not None:
                self.fastpath = "on" if answer["firewall"]["fastpath"] else "off"
            self.tcp.update(switches)
        if settings is not None and self.sync_config:
            with open(self.sync_config, encoding="utf-8") as fh:
                config = json.load(fh)
            config["settings"].update(settings)
            with open(self.sync_config, "w", encoding="utf-8") as fh:
                json.dump(config, fh, indent=2)
            self.log("sync_set", args=args, nodes=nodes)
        return settings

    def start_node(self, name: str, restart: bool = False) -> Proc:
        """Start the firewall node process in host ``name`` and wait until it answers
        (``restart``: a kernel node asks the others for their state, conntrackd -n)."""
        return self.start_nodes([name], restart)[name]

    def start_nodes(self, names: list[str], restart: bool = False) -> dict[str, Proc]:
        """Start the nodes ``names`` at once, then wait until each answers: a node's
        start is mostly its interpreter's imports, which need not wait for another's."""
        procs = {name: self._spawn_node(name, restart) for name in names}
        for name, proc in procs.items():
            wait_until(lambda n=name, p=proc: self.ping_node(n) or self._died(p), 15,
                       f"node {name} to answer")
            self._died(proc)
            self.log("node_start", node=name, pid=proc.pid, **self._node_kind())
        return procs

    def _node_kind(self) -> dict:
        return {"kind": "kernel", "conntrackd": self.conntrackd_mode} if self.kind == "kernel" else {}

    def _spawn_node(self, name: str, restart: bool) -> Proc:
        ports = ["--name", name, "--outside", f"{name}-eth0", "--inside", f"{name}-eth1",
                 "--rules", self.rules, "--run-id", self.run_id,
                 "--events", os.path.join(self.run_dir, f"{name}.events.jsonl")]
        ports += [f"--{name.replace('_', '-')}" for name, on in self.tcp.items()
                  if on and name != "tcp_window_check"]
        ports += [] if self.tcp["tcp_window_check"] else ["--no-tcp-window-check"]
        if self.kind == "kernel":  # its agent (nodes/kernel/agent.py): bridge, nftables, conntrackd
            cmd = [sys.executable, "-m", "nodes.kernel.agent", *ports, "--logs", self.logs]
            cmd += ["--resync"] if restart else []
        else:
            cmd = [sys.executable, "-m", "nodes.shell.node", *ports,
                   *(["--fastpath", self.fastpath] if self.fastpath else []),
                   "--established-timeout", str(self.established_timeout),
                   "--time-wait-timeout", str(self.time_wait_timeout)]
            cmd += ([] if self.checksum else ["--no-checksum"]) + self.node_args
        if self.sync_config:
            cmd += ["--sync-config", self.sync_config]
        return self.spawn(name, cmd, host=self.net[name])

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until every running node has the state it must hold (bulk sync done)."""
        for name in self.node_names():
            if name in self.procs and self.procs[name].alive():
                wait_until(lambda n=name: self.ask(n, "members")["ready"],
                           timeout, f"node {name} to receive its state")

    def spawn(self, name: str, cmd: list[str], host=None, env: dict | None = None) -> Proc:
        if name in self.procs and self.procs[name].alive():
            raise SetupError(f"{name} is already running")
        proc = Proc(name, cmd, os.path.join(self.logs, f"{name}.log"), host, env, self.pids)
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        """Stop every process, the network and the run's leftovers; never raises."""
        global _stopped_cleanly
        clean = True
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        # the traffic first, then the nodes, then what watched them (captures, the
        # controller); each group together
        procs = list(reversed(self.procs.values()))
        nodes = set(self.node_names())
        last = [p for p in procs if p.name == "controller" or p.name.startswith("tcpdump-")]
        groups = ([p for p in procs if p.name not in nodes and p not in last],
                  [p for p in procs if p.name in nodes], last)
        for group in groups:
            for name, code in stop_all(group).items():
                if isinstance(code, Exception):
                    clean = False
                    self.log("process_stop_failed", name=name, error=str(code))
                else:
                    self.log("process_stop", name=name, code=code)
        self.procs.clear()
        kill_pidfiles(self.pids)
        if self.capture:
            capture.merge(self)
        if self.net is not None:
            try:
                others = stop_host_processes(self.net.hosts)
                if others:
                    self.log("host_processes_stopped", processes=others)
                    print("stopped what still ran in the cluster's hosts: " + "; ".join(others),
                          flush=True)
                self._delete_links()
                self.net.stop()
                for controller in self.net.controllers:  # net.stop() leaves their shells
                    controller.terminate()
            except Exception as err:
                clean = False
                self.log("network_stop_failed", error=str(err))
                clean_leftovers()
            self.net = None
        else:
            clean = False  # it never came up: what it started may be half there
        shutil.rmtree(os.path.join(RUN_ROOT, self.run_id), ignore_errors=True)
        _stopped_cleanly = clean
        self.log("cluster_down")

    def _delete_links(self) -> None:
        """Delete every link with one ``ip -batch`` (by its end on a switch, in this
        namespace: a veth goes with either end), instead of Mininet's two commands a
        link through the nodes' shells (a third of the network's stop)."""
        ends, rest = [], []
        for link in self.net.links:
            here = [i.name for i in (link.intf1, link.intf2)
                    if not getattr(i.node, "inNamespace", True)]
            if here:
                ends.append(here[0])
            else:
                rest.append(link)
        if ends:
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join(
                f"link del {name}\n" for name in ends), capture_output=True, text=True)
        self.net.links = rest  # what Mininet still has to delete itself

    # -- observation -----------------------------------------------------
    def snapshot(self) -> None:
        """Append every running node's counters, with the time, to snapshots.jsonl."""
        record = {"t": round(time.time(), 6), "nodes": {}}
        for node in self.node_names():
            if node in self.hung:
                record["nodes"][node] = None  # it would not answer: do not wait for it
            elif node in self.procs:
                try:
                    record["nodes"][node] = self.ask(node, "stats")
                except (OSError, ValueError):
                    record["nodes"][node] = None  # gone
        with open(os.path.join(self.run_dir, "snapshots.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def consistency(self):
        """The consistency check (nodes/observe/consistency.py) over every running node,
        appended with its time to the run folder's consistency.jsonl; the Report."""
        from nodes.observe.consistency import check, check_kernel
        if self.kind == "kernel" and not self.conntrackd_mode:
            raise SetupError("check: kernel nodes without conntrackd (sync none) promise "
                             "nothing to check; use table and counters")
        views = {}
        for node in self.node_names():
            if node in self.procs and node not in self.hung:
                try:
                    views[node] = {"dump": self.ask(node, "dump"), "stats": self.ask(node, "stats")}
                except (OSError, ValueError):
                    views[node] = None  # gone: not judged
        report = check_kernel(views) if self.kind == "kernel" else check(views)
        with open(os.path.join(self.run_dir, "consistency.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": round(time.time(), 6), **report.as_dict()}) + "\n")
        self.log("consistency_check", violations=len(report.violations),
                 findings=len(report.findings), checked=report.checked)
        return report

    def node_names(self) -> list[str]:
        return [f"fw{i}" for i in range(1, self.n + 1)]

    def ask(self, node: str, command: str) -> dict:
        return ask(socket_path(self.run_id, node), command)

    def ping_node(self, node: str) -> bool:
        try:
            return bool(self.ask(node, "ping"))
        except (OSError, ValueError):
            return False

    def flow_count(self, switch: str) -> int:
        out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", switch],
                             capture_output=True, text=True).stdout
        return sum(1 for line in out.splitlines() if f"cookie={COOKIE:#x}" in line)

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    @staticmethod
    def _died(proc: Proc) -> bool:
        if not proc.alive():
            raise SetupError(f"{proc.name} exited ({proc.popen.returncode}); "
                             f"its log {proc.log_path} ends: {proc.log_tail()}")
        return False
