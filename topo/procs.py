"""Daemons in Mininet hosts (or the root namespace), with a lifecycle.

Start with a log file (never an unread pipe), record the pid, wait for
readiness with a deadline, stop with terminate, wait, then kill. Mininet's
``net.stop()`` does not reach processes started with ``popen``; this does.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable

from topo.errors import SetupError  # noqa: F401  (where the runner's parts raise it from)


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something true; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class Proc:
    """One process with a name, a log file and a stop that always stops it."""

    def __init__(self, name: str, cmd: list[str], log_path: str, host=None,
                 env: dict | None = None, pidfile_dir: str | None = None):
        self.name, self.cmd, self.log_path, self.host = name, cmd, log_path, host
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        self.log = open(log_path, "ab")
        full_env = {**os.environ, **(env or {})}
        if host is not None:
            self.popen = host.popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                    env=full_env)
        else:
            self.popen = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                          env=full_env, start_new_session=True)
        self.pid = self.popen.pid
        if pidfile_dir:
            os.makedirs(pidfile_dir, exist_ok=True)
            with open(os.path.join(pidfile_dir, f"{name}.pid"), "w") as fh:
                fh.write(f"{self.pid}\n")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return b"".join(fh.readlines()[-lines:]).decode(errors="replace").strip()
        except OSError:
            return ""

    def stop(self, grace: float = 3.0) -> int | None:
        """Terminate, wait up to ``grace`` seconds, then kill; return the exit code."""
        self.terminate()
        return self.reap(time.monotonic() + grace, grace)

    def terminate(self) -> None:
        if self.alive():
            try:
                self.popen.terminate()
            except ProcessLookupError:
                pass

    def reap(self, deadline: float, grace: float = 3.0) -> int | None:
        """Wait for the exit until ``deadline`` (monotonic), then kill; return the code."""
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                self.popen.kill()
            except ProcessLookupError:
                pass
            self.popen.wait(grace)
        self.log.close()
        return self.popen.returncode

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} {'alive' if self.alive() else 'exited'}>"


def stop_all(procs: list[Proc], grace: float = 3.0) -> dict[str, int | None | Exception]:
    """Stop ``procs`` together: terminate each, then reap each against one deadline,
    so that n processes take the slowest one's exit time, not the sum. Return each
    one's exit code, or the error that kept it from stopping."""
    results: dict[str, int | None | Exception] = {}
    for proc in procs:
        try:
            proc.terminate()
        except Exception as err:  # keep going: every other one must stop too
            results[proc.name] = err
    deadline = time.monotonic() + grace
    for proc in procs:
        if proc.name in results:
            continue
        try:
            results[proc.name] = proc.reap(deadline, grace)
        except Exception as err:
            results[proc.name] = err
    return results


def kill_pidfiles(pidfile_dir: str) -> int:
    """Kill every process named in a run's pid files (after a crash); return how many."""
    killed = 0
    if not os.path.isdir(pidfile_dir):
        return 0
    for name in os.listdir(pidfile_dir):
        try:
            with open(os.path.join(pidfile_dir, name)) as fh:
                pid = int(fh.read().strip())
            if _ours(pid):  # a pid of a run long gone may belong to another process now
                # a group leader (a kernel node's agent, the controller) goes with its
                # group: the agent's conntrackd and conntrack -E too
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
                killed += 1
        except (OSError, ValueError):
            pass
    return killed


OURS = ("nodes.shell.node", "nodes.kernel.agent", "controller.manager", "experiments.", "tcpdump",
        "iperf3")


def _ours(pid: int) -> bool:
    """True if ``pid`` runs one of the project's programs."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return any(mark in cmdline for mark in OURS)
