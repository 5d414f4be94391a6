"""Commands that make traffic through the cluster: ftp, downloads, tcp."""
from __future__ import annotations

import os
import time

from experiments.analysis.attribution import read_jsonl
from experiments.console.errors import ConsoleError
from experiments.ftp_client import MODES as FTP_MODES
from experiments.workload import attributed, session_time, start_ftp_client, start_ftp_servers
from topo.addresses import server_address
from topo.procs import wait_until

FILES = {"small.bin": 64 * 1024, "big.bin": 8 * 1024 * 1024}  # what the FTP servers offer


class TrafficCommands:
    """A mixin of ClusterCLI (experiments/console/__init__.py)."""

    def do_ftp(self, line: str):
        """ftp CLIENT [MODE] [SERVER] [FILE] [ipv6] [count=N] [...] [&]: FTP downloads through the cluster.

        Opens N FTP sessions (default 1, at once) from CLIENT (c1, c2...) to SERVER
        (default srv1), each downloading FILE (small.bin, 64 KiB, or big.bin,
        8 MiB), announcing the data connection with MODE: PASV (default), EPSV,
        PORT or EPRT. ipv6 runs them over IPv6 (to fd00::2:N; EPRT or EPSV only,
        since PORT and PASV carry IPv4 addresses). throttle= reads at most B bytes
        a second (a long download to crash a node under); timeout= is how long the
        client waits (default 3 s);
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

    def do_ftpd(self, line: str):
        """ftpd [stop|start]: the testbed's FTP servers on port 21 of every server host.

        'ftpd' says whether they run; 'ftpd stop' stops them, so that a server of your
        own can listen on port 21 (srv1 vsftpd &, srv1 python3 -m pyftpdlib -p 21 &);
        'ftpd start' starts them again (the ftp command downloads from them).
        'fwcluster cli --no-ftp-server' starts the cluster without them."""
        args = line.split()
        running = [p for p in self.ftp_servers if p.alive()]
        if args == ["stop"]:
            for proc in running:
                proc.stop()
            self.ftp_servers = []
            print(f"stopped {len(running)} FTP server(s): port 21 of the server hosts is free"
                  if running else "no FTP server of the testbed was running")
        elif args == ["start"]:
            if running:
                raise ConsoleError(f"{len(running)} FTP server(s) run already: 'ftpd stop' first")
            self.ftp_servers = start_ftp_servers(self.cluster, self.ftp_root, "dual")
            print(f"started {len(self.ftp_servers)} FTP server(s) (IPv4 and IPv6) on port 21 "
                  "of the server hosts")
        elif not args:
            print(f"{len(running)} FTP server(s) of the testbed run on port 21: "
                  + ", ".join(p.name for p in running) if running else
                  "no FTP server of the testbed runs: 'ftpd start' starts them")
        else:
            raise ConsoleError("usage: ftpd [stop|start]")

    def ftp_plan(self, line: str) -> tuple[str, list[dict], dict]:
        usage = ("ftp CLIENT [MODE] [SERVER] [FILE] [ipv6] [count=N] [throttle=B/S] "
                 "[timeout=S] [pause=S] [&]")
        args = self.words(line, 1, usage)
        client = args[0]
        clients = [f"c{i}" for i in range(1, self.cluster.clients + 1)]
        if client not in clients:
            raise ConsoleError(f"no client {client!r}: the clients are {', '.join(clients)}")
        mode, server, name, family = "PASV", 1, "small.bin", "ipv4"
        opts = {"count": 1, "throttle": 0.0, "timeout": 3.0, "pause": 0.0, "background": False}
        for arg in args[1:]:
            if arg == "&":
                opts["background"] = True
            elif arg in ("ipv4", "ipv6"):
                family = arg
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
                                   f"server, a file ({', '.join(FILES)}), ipv6 or count=/"
                                   f"throttle=/timeout=/pause=; usage: {usage}")
        if not 1 <= opts["count"] <= 50 or opts["timeout"] <= 0 or opts["throttle"] < 0 \
                or not 0 <= opts["pause"] <= 60:
            raise ConsoleError("ftp: count must be 1..50, timeout > 0, throttle >= 0 and "
                               "pause 0..60")
        if family == "ipv6" and mode in ("PORT", "PASV"):
            raise ConsoleError(f"ftp: {mode} carries an IPv4 address (RFC 2428): over ipv6 "
                               f"use EPRT or EPSV")
        plan = []
        for _ in range(opts["count"]):
            self.session_id += 1
            plan.append({"session": self.session_id, "server": server_address(server, family),
                         "file": name, "sha256": self.files[name], "mode": mode})
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
