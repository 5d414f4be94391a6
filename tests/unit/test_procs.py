"""The runner's process lifecycle (topo/procs.py), with real processes, no root."""
import signal
import sys
import time

from topo.procs import Proc, stop_all

# On SIGTERM, write this process's mark, then wait for the other's mark before
# exiting with 0: two of them exit cleanly only if both got SIGTERM before either
# was waited for.
WAIT_FOR_THE_OTHER = r"""
import os, signal, sys, time
mine, other = sys.argv[1], sys.argv[2]
def on_term(*_):
    open(mine, "w").close()
    while not os.path.exists(other):
        time.sleep(0.01)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
open(mine + ".up", "w").close()
while True:
    time.sleep(0.1)
"""

IGNORES_SIGTERM = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").close()
while True:
    time.sleep(0.1)
"""


def started(tmp_path, name, script, *args):
    return Proc(name, [sys.executable, "-c", script, *args], str(tmp_path / f"{name}.log"))


def wait_for(path, proc):
    deadline = time.monotonic() + 10
    while not path.exists():
        assert proc.alive(), proc.log_tail()
        assert time.monotonic() < deadline, f"{proc.name} did not start"
        time.sleep(0.01)


def test_stop_all_terminates_every_process_before_it_waits_for_one(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [started(tmp_path, "a", WAIT_FOR_THE_OTHER, str(a), str(b)),
             started(tmp_path, "b", WAIT_FOR_THE_OTHER, str(b), str(a))]
    for proc, mark in zip(procs, (a, b)):
        wait_for(mark.with_suffix(".up"), proc)
    # one after the other, the first would be killed at the end of its grace
    assert stop_all(procs, grace=5) == {"a": 0, "b": 0}


def test_stop_all_kills_what_outlives_its_grace(tmp_path):
    up = tmp_path / "up"
    stubborn = started(tmp_path, "stubborn", IGNORES_SIGTERM, str(up))
    wait_for(up, stubborn)
    assert stop_all([stubborn], grace=0.2) == {"stubborn": -signal.SIGKILL}
    assert not stubborn.alive()


def test_stop_all_of_processes_already_gone(tmp_path):
    proc = started(tmp_path, "quick", "pass")
    proc.popen.wait(10)
    assert stop_all([proc]) == {"quick": 0}


def test_a_crashed_runs_kernel_agent_goes_with_its_conntrackd(tmp_path):
    """kill_pidfiles left a kernel node's agent (not in the list of the project's
    programs) and the conntrackd it started (not in any pid file) running."""
    import os
    import subprocess
    from topo.procs import kill_pidfiles
    child = tmp_path / "child.pid"
    agent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
         "open(sys.argv[1], 'w').write(str(c.pid)); time.sleep(60)",
         str(child), "-m", "nodes.kernel.agent"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not child.exists() or not child.read_text():
            assert time.monotonic() < deadline, "the agent did not start its child"
            time.sleep(0.01)
        helper = int(child.read_text())
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "fw1.pid").write_text(f"{agent.pid}\n")
        assert kill_pidfiles(str(tmp_path / "pids")) == 1
        assert agent.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{helper}") and \
                not open(f"/proc/{helper}/stat").read().split(") ")[1].startswith("Z"):
            assert time.monotonic() < deadline, "the agent's child outlived it"
            time.sleep(0.01)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
