"""`make cli` in a terminal (tmux): the added commands work and bad input is survived."""
import os
import re
import shutil
import subprocess

import pytest

from tests.integration.conftest import leftovers
from topo.procs import wait_until

pytestmark = pytest.mark.mininet
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Terminal:
    """A tmux session running one command; type lines into it, read its screen."""

    def __init__(self, name: str, command: str):
        assert shutil.which("tmux"), "tmux is not installed: 'make setup' installs it"
        self.name = name
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "250", "-y", "60",
                        "-c", ROOT, f"{command}; echo CLI-EXITED=$?; sleep 600"], check=True)
        subprocess.run(["tmux", "set-option", "-t", name, "history-limit", "50000"], check=True)

    def screen(self) -> list[str]:
        """Every line written so far (not the blank rows below the cursor)."""
        lines = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-S", "-", "-t", self.name],
                               capture_output=True, text=True).stdout.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        return lines

    def wait_for(self, text: str, timeout: float, since: int = 0) -> list[str]:
        """The screen's lines from ``since`` once ``text`` shows among them."""
        return wait_until(lambda: (lines := self.screen()[since:])
                          and any(text in line for line in lines) and lines, timeout,
                          f"{text!r} on the screen; it shows:\n" + "\n".join(self.screen()[-15:]))

    def type(self, line: str, expect: str, timeout: float = 30) -> list[str]:
        """Type ``line`` at the prompt; return what it printed once ``expect`` shows."""
        since = len(self.screen())
        self.wait_for("fwcluster> ", timeout, since - 1)  # the prompt is back
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", line], check=True)
        subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)
        return self.wait_for(expect, timeout, since)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def test_make_cli_accepts_the_cluster_commands_and_survives_bad_input(tmp_path):
    term = Terminal(f"fwc-cli-{os.getpid()}", f"make cli ARGS='--run-dir {tmp_path / 'cli'}'")
    ours = lambda: [l for l in subprocess.run(["ps", "-ewwo", "stat=,args="],  # noqa: E731
                                              capture_output=True, text=True).stdout.splitlines()
                    if str(tmp_path) in l and not l.startswith("Z")]
    try:
        term.wait_for("fwcluster> ", 300)  # 'make setup' runs first
        assert "crash NODE" in "\n".join(term.type("help", "Mininet's own commands"))
        assert any("SIGKILL" in line for line in term.type("help crash", "SIGKILL"))
        # Bad input: one line each, and the cluster keeps running.
        term.type("table fw9", "*** no firewall node 'fw9': the nodes are fw1, fw2, fw3")
        term.type("sync bogus", "*** mode = 'bogus': must be 'none'")
        term.type("sync interval=-1", "*** interval = -1.0: must be greater than 0")
        term.type("sync home", "*** mode home is chosen when the cluster starts")
        term.type("ftp c9 PORT", "*** no client 'c9'")
        term.type("ftp c1 FTPS", "*** ftp: 'FTPS' is not a mode")
        term.type("ftp c1 PORT ipv6", "*** ftp: PORT carries an IPv4 address (RFC 2428)")
        term.type("resume fw1", "*** fw1 is not hung")
        term.type("restart fw1", "*** fw1 is running")
        term.type("frobnicate", "*** Unknown command: frobnicate")
        status = term.type("status", "new flows go to")
        assert sum(" running " in line for line in status) == 3
        # The cluster commands.
        term.type("sync periodic interval=0.5", "fw1, fw2, fw3: now mode periodic, interval 0.5 s")
        term.type("sync ondemand", "now mode ondemand")
        out = term.type("ftp c1 PORT count=2", "session(s):")
        assert any("2 session(s): 2 ok, 0 failed" in line for line in out), out
        out = term.type("ftp c2 EPSV ipv6", "session(s):")  # the servers listen on IPv6 too
        assert any("1 session(s): 1 ok, 0 failed" in line for line in out), out
        term.type("table fw1", "connections on fw1")
        # where: each of c1's connections (the two PORT sessions' control and data
        # connections), its owner, its copy on the owner's backup, where the switches send it
        out = term.type("where c1", "connection(s) of c1 on fw1, fw2, fw3")
        placed = [l for l in out if "owner fw" in l and "switches send it to fw" in l]
        assert len(placed) >= 4, out
        assert not any("(no state there)" in l for l in placed), out
        term.type("where c7", "*** where: 'c7' is no host or host address of the cluster")
        # ftpd: the testbed's FTP servers give port 21 up for a server of one's own
        term.type("ftpd", "4 FTP server(s) of the testbed run on port 21")
        term.type("ftpd stop", "stopped 4 FTP server(s)")
        # (with SO_REUSEADDR, as servers bind: the sessions' TIME_WAIT sockets hold port 21)
        term.type("srv1 python3 -c \"import socket; s = socket.socket(); s.setsockopt("
                  "socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', 21)); s.listen(); "
                  "print('port', 21, 'bound')\"", "port 21 bound")
        term.type("ftpd start", "started 4 FTP server(s)")
        term.type("ftpd start", "*** 4 FTP server(s) run already")
        term.type("expectations fw2", "expectations on fw2")
        term.type("counters fw3", "sync: mode ondemand")
        term.type("common fw1 vpn=k3y", "goes to every node")
        watched = term.type("watch fw2 1 ftp c2 PASV count=3", "watch fw2:")
        assert any("+ connection" in line for line in watched), watched
        term.type("check", "violation(s)")
        term.type("crash fw2", "controller: node down fw2")
        term.type("status", "new flows go to: fw1, fw3")
        out = term.type("ftp c1 EPSV count=2", "session(s):")
        assert any("2 ok" in line for line in out), out
        term.type("restart fw2", "controller: node up fw2")
        term.type("hang fw3", "fw3 hung")
        term.type("table fw3", "*** fw3 is hung")
        term.type("resume fw3", "fw3 resumed")
        term.type("leave fw3", "fw3 left the cluster")
        term.type("restart fw3", "fw3 restarted")
        term.type("ftp c2 PASV big throttle=4000000 &", "in the background")
        term.type("downloads wait", "1 session(s): 1 ok")
        term.type("tcp c1 srv2 1", "receiver")
        term.type("c1 ping -c 1 srv1", "1 received")
        assert sum(" running " in line for line in term.type("status", "new flows go to")) == 3
        term.type("exit", "CLI-EXITED=0", timeout=60)
    finally:
        term.close()  # a hang-up: the CLI stops its cluster also when the test failed
        wait_until(lambda: not ours(), 30, "the CLI's processes to stop")
        if leftovers("none"):  # the CLI did not get to clean up: do it for it
            subprocess.run(["mn", "-c"], capture_output=True)
    assert leftovers("none") == [] and ours() == []


def test_closing_the_terminal_stops_the_cluster(tmp_path):
    """A student closes the window: the hang-up must take the cluster down with it."""
    term = Terminal(f"fwc-hup-{os.getpid()}", f"make cli ARGS='--run-dir {tmp_path / 'cli'}'")
    ours = lambda: [l for l in subprocess.run(["ps", "-ewwo", "stat=,args="],  # noqa: E731
                                              capture_output=True, text=True).stdout.splitlines()
                    if str(tmp_path) in l and "nodes.shell.node" in l and not l.startswith("Z")]
    try:
        term.wait_for("fwcluster> ", 300)
        assert len(ours()) == 3
    finally:
        term.close()
    try:
        wait_until(lambda: not ours(), 30, "the nodes to stop after the hang-up")
        wait_until(lambda: not leftovers("none"), 30, "the network to go")
    finally:  # if the CLI failed to, clean up here, or the next tests inherit its network
        if ours():
            subprocess.run(["pkill", "-KILL", "-f", re.escape(str(tmp_path))], capture_output=True)
        if leftovers("none"):
            subprocess.run(["mn", "-c"], capture_output=True)
