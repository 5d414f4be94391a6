"""The interactive cluster: Mininet's CLI with the cluster up and commands for it.

    make cli                      # 3 nodes, on-demand sync
    make cli NODES=1 SYNC=none    # or: fwcluster cli --nodes 1 --sync none

Besides Mininet's own commands (``c1 ping srv1``, ``nodes``, ``net``, ``sh``,
``py``...) it has commands to look inside the firewall nodes (status, table,
expectations, counters, watch), to break them (crash, hang, resume, leave,
restart), to change how they synchronize (sync) and to make traffic (ftp,
downloads, tcp). ``help COMMAND`` explains each one. A wrong node name, mode
or setting gets a one-line error; the cluster keeps running. The CLI is a
shell: it asks the nodes over their control sockets and the Cluster to act.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from mininet.cli import CLI

from experiments.files import write_files
from experiments.ftp_client import MODES as FTP_MODES
from experiments.analysis.attribution import read_jsonl
from experiments.workload import (attributed, session_time, start_ftp_client,
                                  start_ftp_servers)
from nodes.observe.inspect import changes, format_stats, listing
from topo.addresses import server_ip
from topo.procs import wait_until
from topo import faults

FILES = {"small.bin": 64 * 1024, "big.bin": 8 * 1024 * 1024}  # what the FTP servers offer
CLUSTER_COMMANDS = ("status", "table", "expectations", "counters", "watch", "crash", "hang",
                    "resume", "leave", "restart", "sync", "common", "ftp", "downloads", "tcp",
                    "metrics")


class ConsoleError(Exception):
    """A command the cluster cannot carry out; the message says why and what to type."""


class ClusterCLI(CLI):
    """Mininet's CLI, plus the cluster commands (each ``do_*`` docstring is its help)."""

    prompt = "fwcluster> "

    def __init__(self, cluster, files: dict[str, str], stdin=sys.stdin):
        self.cluster = cluster
        self.files = files  # name -> SHA-256 of what the FTP servers offer
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

    # -- looking inside ----------------------------------------------------
    def do_status(self, _line: str):
        """status: every node's process, sync mode, connections, copies and backup nodes.

        'own' counts the connections a node carries itself, 'copies' the ones it
        holds for other nodes (it is their backup node), 'refused' the packets
        that opened nothing (no rule, no state), 'held' the packets it held until
        the state they created had reached the other nodes. The last line says
        where the switches send new flows (the controller follows the nodes'
        heartbeats)."""
        print(f"{'node':<6}{'process':<9}{'sync':<10}{'ready':<7}{'own':>5}{'copies':>8}"
              f"{'expect':>8}{'refused':>9}{'held':>6}  backed up by")
        for name in self.cluster.node_names():
            state = self.state(name)
            if state != "running":
                print(f"{name:<6}{state:<9}-")
                continue
            s = self.cluster.ask(name, "stats")
            sync = s.get("sync") or {}
            own = sync.get("entries_owned", s["entries"])
            refused = s["drops"].get("policy", 0)  # openings the rules and state refused
            print(f"{name:<6}{state:<9}{sync.get('mode', 'none'):<10}"
                  f"{'yes' if sync.get('ready', True) else 'no':<7}{own:>5}"
                  f"{sync.get('entries_backup', 0):>8}{s['expectations']:>8}{refused:>9}"
                  f"{s['counters'].get('holds_completed', 0):>6}  "
                  f"{', '.join(sync.get('backup_nodes', [])) or '-'}")
        live = self.steered_to()
        print(f"new flows go to: {', '.join(live)}" if live is not None else
              "new flows go to: every node (no membership change yet)")

    def do_table(self, line: str):
        """table NODE: the node's connection table, one connection a line (conntrack -L).

        owner= names the node that carries the connection; a line whose owner is
        another node is a copy this node holds as that node's backup."""
        self.list_dump(line, "table", "entries")

    def do_expectations(self, line: str):
        """expectations NODE: the data connections the FTP code expects (conntrack -L expect)."""
        self.list_dump(line, "expectations", "expectations")

    def list_dump(self, line: str, command: str, what: str) -> None:
        name = self.words(line, 1, f"{command} NODE")[0]
        lines, count = listing(self.ask(name, "dump"), what)
        print("\n".join(lines + [count]))

    def do_counters(self, line: str):
        """counters NODE: packets, drops by reason, held packets, sync counters (conntrackd -s)."""
        name = self.words(line, 1, "counters NODE")[0]
        print(format_stats(self.ask(name, "stats")))

    def do_watch(self, line: str):
        """watch NODE|all [SECONDS] [COMMAND...]: print what appears on nodes as it happens.

        Connections and expectations that appear, change state or go, with the
        time since the watch began, for SECONDS (default 3), on NODE or on every
        running node ('all'). A COMMAND after the seconds runs while watching:
        'watch all 2 ftp c1 PORT' shows a session open on one node and its copy
        arrive on that node's backup node."""
        args = self.words(line, 1, "watch NODE|all [SECONDS] [COMMAND...]")
        names = ([n for n in self.cluster.node_names() if self.state(n) == "running"]
                 if args[0] == "all" else [self.running(args[0])])
        seconds, rest = 3.0, args[1:]
        if rest:
            try:
                seconds, rest = float(rest[0]), rest[1:]
            except ValueError:
                raise ConsoleError(f"watch: {rest[0]!r} is not a number of seconds") from None
        if not 0 < seconds <= 600:
            raise ConsoleError("watch: SECONDS must be more than 0 and at most 600")
        stop, start = threading.Event(), time.monotonic()
        before = {name: self.cluster.ask(name, "dump") for name in names}
        seen: list[str] = []

        def poll():
            while not stop.is_set():
                for name in list(before):
                    try:
                        after = self.cluster.ask(name, "dump")
                    except (OSError, ValueError):
                        print(f"[{name} +{time.monotonic() - start:.3f} s] no answer (down?)",
                              flush=True)
                        del before[name]
                        continue
                    for change in changes(before[name], after):
                        seen.append(change)
                        print(f"[{name} +{time.monotonic() - start:.3f} s] {change}", flush=True)
                    before[name] = after
                stop.wait(0.01)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            if rest:
                self.onecmd(" ".join(rest))
            left = seconds - (time.monotonic() - start)
            if left > 0:
                stop.wait(left)
        finally:
            stop.set()
            watcher.join(2)
        print(f"watch {args[0]}: {len(seen)} change(s) in {time.monotonic() - start:.1f} s")

    # -- breaking nodes ----------------------------------------------------
    def do_crash(self, line: str):
        """crash NODE: kill the node's process at once (SIGKILL), as a power failure would.

        Its peers stop hearing its heartbeats; after dead_after (100 ms) they take
        it for failed, its backup node carries its connections and the switches
        send its flows elsewhere."""
        name = self.node(self.words(line, 1, "crash NODE")[0])
        if name not in self.cluster.procs:
            raise ConsoleError(f"{name} is not running: 'restart {name}' brings it back")
        faults.crash(self.cluster, name)
        print(f"{name} crashed")
        self.report_membership()

    def do_hang(self, line: str):
        """hang NODE: freeze the node's process (SIGSTOP): alive, but silent and stuck.

        Its peers cannot tell it from a crash; 'resume NODE' wakes it."""
        name = self.running(self.words(line, 1, "hang NODE")[0])
        faults.hang(self.cluster, name)
        print(f"{name} hung (SIGSTOP)")
        self.report_membership()

    def do_resume(self, line: str):
        """resume NODE: wake a hung node (SIGCONT); it finds out what it missed."""
        name = self.node(self.words(line, 1, "resume NODE")[0])
        if name not in self.cluster.hung:
            raise ConsoleError(f"{name} is not hung (hang it first with 'hang {name}')")
        faults.resume(self.cluster, name)
        print(f"{name} resumed (SIGCONT)")
        self.report_membership()

    def do_leave(self, line: str):
        """leave NODE: stop the node gracefully (SIGTERM): it says goodbye to its peers.

        Its peers know at once, without waiting for silence."""
        name = self.running(self.words(line, 1, "leave NODE")[0])
        faults.leave(self.cluster, name)
        print(f"{name} left the cluster")
        self.report_membership()

    def do_restart(self, line: str):
        """restart NODE: start a crashed or departed node again (a new boot).

        It asks its peers for the state it must hold (a bulk transfer) and
        carries traffic once it has it."""
        name = self.node(self.words(line, 1, "restart NODE")[0])
        if name in self.cluster.procs:
            raise ConsoleError(f"{name} is running: 'crash {name}' or 'leave {name}' first")
        t0 = time.monotonic()
        proc = faults.restart(self.cluster, name)
        self.cluster.wait_ready()
        sync = self.cluster.ask(name, "stats").get("sync") or {}
        print(f"{name} restarted (pid {proc.pid}), ready after {time.monotonic() - t0:.2f} s, "
              f"holding {sync.get('entries_backup', 0)} copies for other nodes")
        self.report_membership()

    def steered_to(self) -> list[str] | None:
        """The nodes the switches send new flows to, by the controller's last word."""
        live = None
        for ev in read_jsonl(self.ctl_events):
            if "live" in ev:
                live = ev["live"]
        return live

    def report_membership(self, timeout: float = 1.5) -> None:
        """Print what the controller did about membership since last time (waits a little)."""
        deadline = time.monotonic() + timeout
        while True:
            events = read_jsonl(self.ctl_events)
            news = [e for e in events[self.ctl_seen:] if e["event"] in ("node_down", "node_up")]
            if news or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        self.ctl_seen = len(events)
        for ev in news:
            why = f" ({ev['why']}{', silent %s ms' % ev['silent_ms'] if 'silent_ms' in ev else ''})" \
                if "why" in ev else ""
            moved = ev.get("buckets_moved", ev.get("buckets_returned", 0))
            print(f"controller: {ev['event'].replace('_', ' ')} {ev['node']}{why}; {moved} bucket(s) "
                  f"moved; new flows go to {', '.join(ev['live'])}")

    # -- synchronization ---------------------------------------------------
    def do_sync(self, line: str):
        """sync [MODE] [KEY=VALUE...]: how the nodes synchronize; change it at run time.

        MODE: none (no state moves), periodic (every interval seconds), ondemand
        (at each change), combined (both), auto. KEY=VALUE: interval=SECONDS,
        hold=on|off (hold the packet that creates state until the backup node has
        it), periodic=full|differential, replication=backup|full, delay=SECONDS.
        With no argument: each node's settings. Mode home is chosen at start."""
        args = line.split()
        if args and "=" not in args[0]:
            args[0] = f"mode={args[0]}"
        up = [n for n in self.cluster.node_names() if self.state(n) == "running"]
        if not up:
            raise ConsoleError("no node is running: 'restart fw1' first")
        if args:
            try:
                config = self.cluster.set_sync(" ".join(args), up)
            except ValueError as err:
                raise ConsoleError(str(err)) from None
            print(f"{', '.join(up)}: now {describe(config)}")
            return
        for name in up:
            print(f"{name}: {describe(self.ask(name, 'config')['sync'])}")

    def do_common(self, line: str):
        """common NODE NAME=VALUE: state every node needs (a VPN key, a login) made on NODE.

        Unlike a connection, which goes only to the backup nodes, common state
        goes to every node; 'counters NODE' on any node then counts it."""
        args = self.words(line, 2, "common NODE NAME=VALUE")
        if "=" not in args[1]:
            raise ConsoleError("usage: common NODE NAME=VALUE")
        self.ask(args[0], "common " + args[1])
        print(f"{args[0]}: common state {args[1].split('=')[0]!r} set; it goes to every node")

    # -- traffic -----------------------------------------------------------
    def do_ftp(self, line: str):
        """ftp CLIENT [MODE] [SERVER] [FILE] [count=N] [...] [&]: FTP downloads through the cluster.

        Opens N FTP sessions (default 1, at once) from CLIENT (c1, c2...) to SERVER
        (default srv1), each downloading FILE (small.bin, 64 KiB, or big.bin,
        8 MiB), announcing the data connection with MODE: PASV (default), EPSV,
        PORT or EPRT. throttle= reads at most B bytes a second (a long download
        to crash a node under); timeout= is how long the client waits (default 3 s);
        pause= waits S seconds between announcing the data connection and opening
        it (time to see the expectation in 'watch' or 'expectations').
        Each session's line says how it ended and which nodes carried its control
        and data connections. With '&' they run in the background: 'downloads'."""
        client, plan, opts = self.ftp_plan(line)
        batch = len(self.batches) + 1
        out = os.path.join(self.work, f"ftp-{batch}.jsonl")
        proc = start_ftp_client(self.cluster, f"ftp-{batch}", client, plan,
                                os.path.join(self.work, f"ftp-{batch}.plan.json"), out,
                                len(plan), opts["timeout"], opts["throttle"], opts["pause"])
        longest = 5 + session_time(opts["timeout"], FILES[plan[0]["file"]], opts["throttle"],
                                   opts["pause"])
        self.batches.append({"batch": batch, "proc": proc, "out": out, "n": len(plan),
                             "deadline": time.monotonic() + longest, "shown": False})
        if opts["background"]:
            print(f"started {len(plan)} session(s) from {client} in the background "
                  f"(batch {batch}): 'downloads' shows how they end")
            return
        self.finish(self.batches[-1])

    def ftp_plan(self, line: str) -> tuple[str, list[dict], dict]:
        usage = ("ftp CLIENT [MODE] [SERVER] [FILE] [count=N] [throttle=B/S] [timeout=S] "
                 "[pause=S] [&]")
        args = self.words(line, 1, usage)
        client = args[0]
        clients = [f"c{i}" for i in range(1, self.cluster.clients + 1)]
        if client not in clients:
            raise ConsoleError(f"no client {client!r}: the clients are {', '.join(clients)}")
        mode, server, name = "PASV", 1, "small.bin"
        opts = {"count": 1, "throttle": 0.0, "timeout": 3.0, "pause": 0.0, "background": False}
        for arg in args[1:]:
            if arg == "&":
                opts["background"] = True
            elif arg.upper() in FTP_MODES:
                mode = arg.upper()
            elif arg.startswith("srv"):
                servers = [f"srv{i}" for i in range(1, self.cluster.servers + 1)]
                if arg not in servers:
                    raise ConsoleError(f"no server {arg!r}: the servers are {', '.join(servers)}")
                server = int(arg[3:])
            elif arg in FILES or f"{arg}.bin" in FILES:
                name = arg if arg in FILES else f"{arg}.bin"
            elif "=" in arg and arg.split("=")[0] in opts and arg.split("=")[0] != "background":
                key, value = arg.split("=", 1)
                try:
                    opts[key] = int(value) if key == "count" else float(value)
                except ValueError:
                    raise ConsoleError(f"ftp: {key}={value!r} is not a number") from None
            else:
                raise ConsoleError(f"ftp: {arg!r} is not a mode ({', '.join(FTP_MODES)}), a "
                                   f"server, a file ({', '.join(FILES)}) or count=/throttle=/"
                                   f"timeout=/pause=; usage: {usage}")
        if not 1 <= opts["count"] <= 50 or opts["timeout"] <= 0 or opts["throttle"] < 0 \
                or not 0 <= opts["pause"] <= 60:
            raise ConsoleError("ftp: count must be 1..50, timeout > 0, throttle >= 0 and "
                               "pause 0..60")
        plan = []
        for _ in range(opts["count"]):
            self.session_id += 1
            plan.append({"session": self.session_id, "server": server_ip(server), "file": name,
                         "sha256": self.files[name], "mode": mode})
        return client, plan, opts

    def finish(self, batch: dict) -> None:
        """Wait for a batch of sessions to end, then print one line a session."""
        wait_until(lambda: not batch["proc"].alive() or time.monotonic() > batch["deadline"],
                   max(1.0, batch["deadline"] - time.monotonic() + 1), "the FTP client")
        batch["proc"].stop()
        known = attributed(read_jsonl(batch["out"]), self.cluster.run_dir)
        for rec in sorted(known, key=lambda r: r["session"]):
            print(session_line(rec))
        ok = sum(r["outcome"] == "ok" for r in known)
        missing = batch["n"] - len(known)
        print(f"{len(known)} session(s): {ok} ok, {len(known) - ok} failed"
              + (f", {missing} did not report (client stopped)" if missing else ""))
        batch["shown"] = True

    def do_downloads(self, line: str):
        """downloads [wait]: how the background FTP sessions (ftp ... &) are doing.

        Finished batches are shown once; with 'wait', waits for the running ones."""
        wait = line.strip() == "wait"
        if line.strip() not in ("", "wait"):
            raise ConsoleError("usage: downloads [wait]")
        pending = [b for b in self.batches if not b["shown"]]
        if not pending:
            print("no background sessions to show (start some with 'ftp c1 big &')")
        for batch in pending:
            if batch["proc"].alive() and not wait:
                done = len(read_jsonl(batch["out"]))
                print(f"batch {batch['batch']}: running, {done}/{batch['n']} session(s) ended")
            else:
                print(f"batch {batch['batch']}:")
                self.finish(batch)

    def do_tcp(self, line: str):
        """tcp CLIENT SERVER [SECONDS]: a TCP stream (iperf3, port 5001) through the cluster."""
        args = self.words(line, 2, "tcp CLIENT SERVER [SECONDS]")
        client, server = args[0], args[1]
        for host, kind in ((client, "c"), (server, "srv")):
            if host not in self.mn or not host.startswith(kind):
                raise ConsoleError(f"tcp: {host!r} is not a {'client' if kind == 'c' else 'server'}"
                                   f" host (clients c1.., servers srv1..)")
        try:
            seconds = float(args[2]) if len(args) > 2 else 2.0
        except ValueError:
            raise ConsoleError(f"tcp: {args[2]!r} is not a number of seconds") from None
        srv = self.mn[server]
        # Started and stopped by its own id: hosts share the machine's PID namespace,
        # so a pattern (pkill -f) would hit any iperf3 on the machine.
        proc = self.cluster.spawn(f"iperf3-{server}", ["iperf3", "-s", "-p", "5001", "-1"],
                                  host=srv)
        try:
            wait_until(lambda: ":5001" in srv.cmd("ss -Hltn sport = :5001") or not proc.alive(),
                       5, f"iperf3 to listen on {server}")
            out = self.mn[client].cmd(f"iperf3 -c {srv.IP()} -p 5001 -t {seconds:g} "
                                      "--connect-timeout 3000 -f m")
        finally:
            proc.stop()
            self.cluster.procs.pop(proc.name, None)
        summary = [l for l in out.splitlines() if "sender" in l or "receiver" in l
                   or "error" in l]
        print("\n".join(summary) or out.strip())

    def do_metrics(self, _line: str):
        """metrics: where the Prometheus metrics of the nodes and the controller are served."""
        if not self.cluster.metrics_url:
            raise ConsoleError("metrics are off: start with 'make cli ARGS=--metrics-port=9810'")
        print(self.cluster.metrics_url)


def describe(config: dict) -> str:
    """A node's sync settings in a line."""
    if config["mode"] == "none":
        return "mode none (no state moves between the nodes)"
    parts = [f"mode {config['mode']}"]
    if config["mode"] in ("periodic", "combined"):
        parts.append(f"interval {config['interval']:g} s ({config['periodic']})")
    parts.append(f"hold {'on' if config['hold'] else 'off'}")
    parts.append(f"replication {config['replication']}")
    if config.get("delay"):
        parts.append(f"delay {config['delay']:g} s")
    return ", ".join(parts)


def session_line(rec: dict) -> str:
    """One FTP session: how it ended, how long it took, which nodes carried it."""
    took = rec["t_end"] - rec["t_start"]
    head = f"  #{rec['session']} {rec['mode']} -> {rec['server']} {rec['file']}: "
    if rec["outcome"] == "ok":
        head += f"ok, {rec['bytes']} bytes in {took:.2f} s"
    else:
        head += f"FAILED after {took:.2f} s ({rec['error'] or rec['outcome']})"
    data = rec["data_node"] or "?"
    refusals = rec.get("data_refusals", 0)
    if rec["data_verdict"] == "refused" and rec["outcome"] != "ok":
        data = f"{data} refused it ({refusals} packet(s))"
    elif refusals:
        data = f"{data} (after {refusals} refused packet(s))"
    return f"{head} | control on {rec['control_node'] or '?'}, data on {data}"


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
                 capture=args.capture, metrics_port=args.metrics_port) as cluster:
        root = os.path.join(cluster.run_dir, "ftp-root")
        files = write_files(root, FILES, seed=1)
        start_ftp_servers(cluster, root)
        print(f"fwcluster: {args.nodes} firewall node(s) fw1..fw{args.nodes}, sync {args.sync}, "
              f"failover {args.failover}; clients c1..c{args.clients} outside, servers "
              f"srv1..srv{args.servers} inside")
        print(f"fwcluster: logs, events and captures in {cluster.run_dir}")
        if cluster.metrics_url:
            print(f"fwcluster: Prometheus metrics at {cluster.metrics_url}")
        print("Type 'help' for the commands, 'status' to begin; 'exit' stops the cluster.",
              flush=True)
        setLogLevel("output")  # Mininet's commands print their results at this level
        try:
            if args.script:
                with open(args.script, encoding="utf-8") as script:
                    ClusterCLI(cluster, files, stdin=script)
            else:
                ClusterCLI(cluster, files)
        finally:
            # The CLI may also end by a closed terminal (EOF, or a write that fails) with
            # the hang-up signal still on its way: it must not cut the cleanup short.
            calm_down()
            setLogLevel("error")  # the cluster stops quietly
    return 0
