"""The pure engine imports no I/O: no socket, time, select, mininet or ryu.

Each check runs in a fresh interpreter whose import system refuses the
blocked modules, so a module that pulls one in (even through another) fails
here, with the chain that led to it.
"""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# The gateway engine, the FTP code, the sync logic, the steering policy and the
# settings: time comes in as an argument, bytes and decisions go out.
PURE = ["nodes.packet", "nodes.defrag", "nodes.rules", "nodes.conntrack", "nodes.ftp", "nodes.engine",
        "nodes.groups", "nodes.syncproto", "nodes.home", "nodes.delayline", "nodes.samples",
        "nodes.failure", "nodes.settings", "nodes.sync", "nodes.sync.channel",
        "nodes.sync.replication", "nodes.sync.membership", "nodes.sync.hold",
        "controller.steering", "controller.membership", "controller.commit",
        "nodes.kernel.nft", "nodes.kernel.conntrackd", "nodes.kernel.nflog",
        "experiments.schema", "experiments.spec", "experiments.timeline", "topo.addresses"]
# The analysis reads files and draws figures: it may use the clock and the
# file system, but never Mininet or Ryu, so figures are rebuilt anywhere.
NO_EMULATOR = ["experiments.analysis", "experiments.plot"]

# A library may use the clock inside (pydantic's core imports datetime); what must not
# is the project's own code: every import statement of a module of ours goes through
# this check, also for a module that a library loaded already.
BLOCKER = """
import builtins, os, sys
BLOCKED = set(sys.argv[1].split(","))
ROOT = os.getcwd() + os.sep
real_import = builtins.__import__
def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    where = (globals or {}).get("__file__") or ""
    ours = where.startswith(ROOT) and os.sep + ".venv" + os.sep not in where
    top = name.split(".")[0]
    if level == 0 and top in BLOCKED and (ours or top in ("mininet", "ryu")):
        raise ImportError(f"{name} is blocked for pure modules (imported by {where})")
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = guarded
import importlib
for module in sys.argv[2:]:
    importlib.import_module(module)
print("ok")
"""


def _import_with_blocked(blocked: list[str], modules: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(blocked), *modules],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io(module):
    done = _import_with_blocked(["socket", "time", "select", "selectors", "mininet", "ryu",
                                 "eventlet"], [module])
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-1500:]


def test_the_blocker_itself_catches_an_io_import():
    done = _import_with_blocked(["socket"], ["nodes.shell.node"])
    assert done.returncode != 0 and "socket is blocked" in done.stderr


@pytest.mark.parametrize("module", NO_EMULATOR)
def test_analysis_imports_neither_mininet_nor_ryu(module):
    done = _import_with_blocked(["mininet", "ryu", "eventlet"], [module])
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-1500:]
