"""The interactive cluster: Mininet's CLI with the cluster up and commands for it.

    make cli                      # 3 nodes, on-demand sync
    make cli NODES=1 SYNC=none    # or: fwcluster cli --nodes 1 --sync none

Besides Mininet's own commands (``c1 ping srv1``, ``nodes``, ``net``, ``sh``,
``py``...) it has commands to look inside the firewall nodes (status, table,
expectations, counters, watch, where), to break them (crash, hang, resume, leave,
restart), to change how they synchronize (sync) and to make traffic (ftp,
downloads, tcp). ``help COMMAND`` explains each one. A wrong node name, mode
or setting gets a one-line error; the cluster keeps running. The CLI is a
shell: it asks the nodes over their control sockets and the Cluster to act.
The commands live by topic: inspecting.py, breaking.py, traffic.py.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from mininet.cli import CLI

from experiments.analysis.attribution import read_jsonl
from experiments.console.breaking import FaultCommands
from experiments.console.errors import ConsoleError
from experiments.console.inspecting import InspectCommands
from experiments.console.traffic import FILES, TrafficCommands
from experiments.files import write_files
from experiments.workload import start_ftp_servers
CLUSTER_COMMANDS = ("status", "table", "expectations", "counters", "watch", "where", "check",
                    "crash", "hang", "resume", "leave", "restart", "sync", "common", "ftp",
                    "downloads", "tcp", "ftpd", "metrics")


class ClusterCLI(InspectCommands, FaultCommands, TrafficCommands, CLI):
    """Mininet's CLI, plus the cluster commands (each ``do_*`` docstring is its help)."""

    prompt = "fwcluster> "

    def __init__(self, cluster, files: dict[str, str], stdin=sys.stdin,
                 ftp_root: str | None = None, ftp_servers: list | None = None):
        self.cluster = cluster
        self.files = files  # name -> SHA-256 of what the FTP servers offer
        self.ftp_root = ftp_root  # what they serve
        self.ftp_servers = list(ftp_servers or [])  # the running ones (ftpd stop / start)
        self.batches: list[dict] = []  # FTP sessions started with '&'
        self.session_id = 0
        self.work = os.path.join(cluster.run_dir, "cli")
        os.makedirs(self.work, exist_ok=True)
        self.ctl_events = os.path.join(cluster.run_dir, "controller.events.jsonl")
        self.ctl_seen = len(read_jsonl(self.ctl_events))
        super().__init__(cluster.net, stdin=stdin)

    # -- the loop ------------------------------------------------------------
    def preloop(self):
        if not self.isatty():  # a script or a pipe: read it line by line, echo each command
            self.echo, self.prompt = self.prompt, ""
            self.use_rawinput = False
        else:
            self.echo = None

    def precmd(self, line: str) -> str:
        if self.echo and line.strip():
            print(f"{self.echo}{line.rstrip()}", flush=True)
        return super().precmd(line)

    def waitForNode(self, node):  # noqa: N802 (Mininet's name)
        """Mininet passes what is typed on to the host's shell while a command runs;
        from a script that would swallow the next commands: just wait and print."""
        if self.isatty():
            return super().waitForNode(node)
        while node.waiting:
            print(node.monitor(timeoutms=100), end="", flush=True)
        return None

    def onecmd(self, line: str):
        """Run one command; whatever goes wrong is one line, and the cluster keeps running."""
        try:
            return super().onecmd(line)
        except ConsoleError as err:
            print(f"*** {err}", flush=True)
        except Exception as err:  # a command must never take the cluster down with it
            print(f"*** {line.split()[0] if line.split() else 'command'} failed: "
                  f"{type(err).__name__}: {err}", flush=True)
        return False

    def do_help(self, line: str):
        """help [COMMAND]: the cluster commands, then Mininet's; or one command's help."""
        if line.strip():
            return super().do_help(line)
        print("Cluster commands (help COMMAND for more):")
        for name in CLUSTER_COMMANDS:
            doc = getattr(self, f"do_{name}").__doc__.strip().splitlines()
            print(f"  {doc[0]}")
        print("Traffic that is not FTP: c1 ping srv1 (ICMP), tcp c1 srv1 (TCP port 5001).")
        print("Mininet's own commands: nodes, net, links, dump, sh, py, exit; "
              "NODE CMD runs CMD in host NODE.")
        return None

    # -- names -------------------------------------------------------------
    def node(self, name: str) -> str:
        """``name`` if it is a firewall node, else a one-line error naming the nodes."""
        nodes = self.cluster.node_names()
        if name not in nodes:
            raise ConsoleError(f"no firewall node {name!r}: the nodes are {', '.join(nodes)}")
        return name

    def running(self, name: str) -> str:
        """A node whose process runs and answers (not crashed, left or hung)."""
        self.node(name)
        if name in self.cluster.hung:
            raise ConsoleError(f"{name} is hung and answers nothing: 'resume {name}' first")
        if name not in self.cluster.procs:
            raise ConsoleError(f"{name} is not running (crashed or left): 'restart {name}'")
        return name

    def state(self, name: str) -> str:
        if name in self.cluster.hung:
            return "hung"
        proc = self.cluster.procs.get(name)
        return "running" if proc is not None and proc.alive() else "down"

    def ask(self, name: str, command: str) -> dict:
        answer = self.cluster.ask(self.running(name), command)
        if "error" in answer:
            raise ConsoleError(f"{name}: {answer['error']}")
        return answer

    @staticmethod
    def words(line: str, least: int, usage: str) -> list[str]:
        args = line.split()
        if len(args) < least:
            raise ConsoleError(f"usage: {usage}")
        return args


def main_console(args) -> int:
    """Bring the cluster up, serve FTP, run the CLI, take everything down."""
    from mininet.log import setLogLevel
    from topo.net import Cluster

    stopping = []  # set once the cluster is being taken down: nothing may interrupt that

    def hang_up(signum, _frame):
        """The terminal closed or someone stopped us: leave the CLI, which takes the
        cluster down, and write nothing more to a terminal that is gone."""
        in_cli = not stopping
        calm_down()
        if signum == signal.SIGHUP:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, sys.stdout.fileno())
            os.dup2(quiet, sys.stderr.fileno())
        if in_cli:
            raise SystemExit(128 + signum)

    def calm_down():
        """From here on, SIGHUP and SIGTERM wait for the cleanup instead of cutting it."""
        stopping.append(True)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    signal.signal(signal.SIGHUP, hang_up)
    signal.signal(signal.SIGTERM, hang_up)
    run_dir = args.run_dir or os.path.join(
        "results", f"cli-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    sync = {"mode": args.sync} if args.sync != "none" else {}
    with Cluster(run_dir, args.rules, n=args.nodes, clients=args.clients, servers=args.servers,
                 sync=sync, failover=None if args.failover == "none" else args.failover,
                 capture=args.capture, metrics_port=args.metrics_port,
                 node=getattr(args, "node", "python"),
                 fastpath=(None if getattr(args, "node", "python") == "kernel"
                           or getattr(args, "fastpath", "none") == "none"
                           else args.fastpath)) as cluster:
        root = os.path.join(cluster.run_dir, "ftp-root")
        files = write_files(root, FILES, seed=1)
        servers = [] if getattr(args, "no_ftp_server", False) else \
            start_ftp_servers(cluster, root, "dual")  # 'ftp c1 EPSV ipv6' too
        kind = " kernel" if getattr(args, "node", "python") == "kernel" else ""
        print(f"fwcluster: {args.nodes}{kind} firewall node(s) "
              f"fw1..fw{args.nodes}, sync {args.sync}, "
              f"failover {args.failover}; clients c1..c{args.clients} outside, servers "
              f"srv1..srv{args.servers} inside")
        print(f"fwcluster: logs, events and captures in {cluster.run_dir}")
        print(f"fwcluster: FTP servers on port 21 of srv1..srv{args.servers} ('ftpd stop' "
              "frees the port for your own)" if servers else
              "fwcluster: no FTP server runs (--no-ftp-server): port 21 is yours; "
              "'ftpd start' starts the testbed's")
        if cluster.metrics_url:
            print(f"fwcluster: Prometheus metrics at {cluster.metrics_url}")
        print("Type 'help' for the commands, 'status' to begin; 'exit' stops the cluster.",
              flush=True)
        setLogLevel("output")  # Mininet's commands print their results at this level
        try:
            if args.script:
                with open(args.script, encoding="utf-8") as script:
                    ClusterCLI(cluster, files, stdin=script, ftp_root=root, ftp_servers=servers)
            else:
                ClusterCLI(cluster, files, ftp_root=root, ftp_servers=servers)
        finally:
            # The CLI may also end by a closed terminal (EOF, or a write that fails) with
            # the hang-up signal still on its way: it must not cut the cleanup short.
            calm_down()
            setLogLevel("error")  # the cluster stops quietly
    return 0
