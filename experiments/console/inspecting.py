"""Commands that look inside the nodes and set how they synchronize.

status, table, expectations, counters, watch, where, sync, common, metrics.
"""
from __future__ import annotations

import re
import subprocess
import threading
import time

from experiments.console.errors import ConsoleError
from nodes.observe.inspect import changes, format_stats, listing
from nodes.packet import PROTO_NAMES
from topo.addresses import HOST_PORT_BASE, client_ip, client_ip6, server_ip, server_ip6


def host_ports(clients: int, servers: int) -> dict[str, tuple[str, str, int]]:
    """Each host address: (host, switch, port) of the host that has it."""
    out = {}
    for kind, switch, count, ips in (("c", "s1", clients, (client_ip, client_ip6)),
                                     ("srv", "s2", servers, (server_ip, server_ip6))):
        for i in range(1, count + 1):
            for ip in ips:
                out[ip(i)] = (f"{kind}{i}", switch, HOST_PORT_BASE + i)
    return out


def placement(dumps: dict[str, dict], addresses: set[str]) -> list[dict]:
    """Each connection to or from ``addresses`` in the nodes' dumps (node -> dump):
    its tuple, state and owner as the owner has them, and the nodes holding copies."""
    found: dict[str, dict] = {}
    for node, dump in sorted(dumps.items()):
        for e in dump["entries"]:
            t = e["tuple"]
            if t["src"] not in addresses and t["dst"] not in addresses:
                continue
            c = found.setdefault(e["orig"], {"tuple": t, "owner": e["owner"],
                                             "state": e.get("state"), "copies": []})
            if node == e["owner"]:
                c["state"] = e.get("state")
            else:
                c["copies"].append(node)
    return sorted(found.values(), key=lambda c: (c["tuple"]["src"], c["tuple"]["sport"],
                                                 c["tuple"]["dst"], c["tuple"]["dport"]))


def where_line(c: dict, steered: str | None) -> str:
    """One connection of ``placement``, and the node the switches send it to."""
    t = c["tuple"]
    proto = PROTO_NAMES.get(t["proto"], str(t["proto"]))
    line = (f"{proto:<6} {t['src']}:{t['sport']} -> {t['dst']}:{t['dport']}  "
            f"{c['state'] or '-':<12} owner {c['owner']:<4} copies "
            f"{', '.join(c['copies']) or '-':<10} switches send it to {steered or '?'}")
    if steered and steered != c["owner"]:
        line += ("  (a copy there)" if steered in c["copies"] else "  (no state there)")
    return line


def trace_match(t: dict) -> str:
    """The ofproto/trace flow of a connection's original direction."""
    v6 = ":" in t["src"]
    proto = PROTO_NAMES.get(t["proto"], "ip")
    fields = [proto + ("6" if v6 and proto in ("tcp", "udp") else ""),
              f"{'ipv6_src' if v6 else 'nw_src'}={t['src']}",
              f"{'ipv6_dst' if v6 else 'nw_dst'}={t['dst']}"]
    if proto in ("tcp", "udp"):
        fields += [f"tp_src={t['sport']}", f"tp_dst={t['dport']}"]
    return ",".join(fields)


class InspectCommands:
    """A mixin of ClusterCLI (experiments/console/__init__.py)."""

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

    def do_where(self, line: str):
        """where HOST|ADDRESS: which node owns each connection of a host, its copies, and
        where the switches send it.

        Lists every connection to or from the host (c1, srv2) or address that a
        running node holds: its state, its owner (the node that carries it), the
        nodes that hold a copy (its backup nodes), and the node the switches send
        its packets to now (Open vSwitch's own trace of the steering flows). After
        a failover the switches send a dead node's connections to its backup,
        which owns them once it has adopted them."""
        what = self.words(line, 1, "where HOST|ADDRESS")[0]
        addresses = self.host_addresses(what)
        dumps = {n: self.cluster.ask(n, "dump") for n in self.cluster.node_names()
                 if self.state(n) == "running"}
        conns = placement(dumps, addresses)
        for c in conns:
            print(where_line(c, self.steered_node(c["tuple"])))
        print(f"{len(conns)} connection(s) of {what} on {', '.join(sorted(dumps)) or 'no node'}")

    def host_addresses(self, what: str) -> set[str]:
        """The addresses of host ``what``, or ``what`` itself if it is an address."""
        hosts = host_ports(self.cluster.clients, self.cluster.servers)
        if what in hosts:
            return {what}
        mine = {a for a, (host, _, _) in hosts.items() if host == what}
        if mine:
            return mine
        names = sorted({host for host, _, _ in hosts.values()})
        raise ConsoleError(f"where: {what!r} is no host or host address of the cluster "
                           f"(the hosts are {', '.join(names)})")

    def steered_node(self, t: dict) -> str | None:
        """The node the switches send ``t``'s original direction to (ofproto/trace)."""
        at = host_ports(self.cluster.clients, self.cluster.servers).get(t["src"])
        if at is None:
            return None
        _, switch, port = at
        out = subprocess.run(["ovs-appctl", "ofproto/trace", switch,
                              f"in_port={port},{trace_match(t)}"],
                             capture_output=True, text=True, timeout=10).stdout
        outputs = re.findall(r"output:(\d+)", out)
        return f"fw{outputs[-1]}" if outputs and int(outputs[-1]) < HOST_PORT_BASE else None

    def do_counters(self, line: str):
        """counters NODE: packets, drops by reason, held packets, sync counters (conntrackd -s)."""
        name = self.words(line, 1, "counters NODE")[0]
        print(format_stats(self.ask(name, "stats")))

    def do_check(self, _line: str):
        """check: does every node hold what the sync mode promises?

        Compares the tables of the running nodes: each connection a node owns
        must be on its backup nodes in the same state, no node may keep copies
        of a node that is gone, none may be owned twice, and expectations and
        common state must be on every node. Connections that changed in the
        last 0.2 s are left out (their copies may be on the way). Where the
        mode promises nothing (none, home, periodic) it lists what differs."""
        print("\n".join(self.cluster.consistency().lines()))

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

    # -- synchronization ---------------------------------------------------
    def do_sync(self, line: str):
        """sync [MODE] [KEY=VALUE...]: how the nodes synchronize; change it at run time.

        MODE: none (no state moves), periodic (every interval seconds), ondemand
        (at each change), combined (both), auto. KEY=VALUE: interval=SECONDS,
        hold=on|off (hold the packet that creates state until the backup node has
        it), periodic=full|differential, replication=backup|full, delay=SECONDS,
        window_sync=change|schedule|scale|off (the TCP window in replicated entries),
        and the firewall's tcp_liberal=on|off (pass out-of-window segments),
        tcp_loose=on|off (pick connections up mid-stream), tcp_window_check=on|off,
        fastpath=on|off (the nodes' kernels forward established connections; 'stats'
        shows how many).
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
    if config.get("window_sync", "off") != "off":
        parts.append(f"TCP windows replicated: {config['window_sync']}")
    return ", ".join(parts)
