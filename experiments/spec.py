"""Experiment specs: TOML files that say what to run; validated without root.

A spec has a name, a seed, repetitions, a topology, a cluster configuration,
traffic and a timeline of faults. A list where one value is expected (for
example ``nodes = [1, 3]``) sweeps it: the run covers every combination.
"""
from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import dataclass

from nodes.rules import RuleError, RuleSet
from experiments.timeline import check
from nodes.sync import TRIGGERS, SyncConfig

MAX_NODES = 8  # as topo.cluster.MAX_NODES, which imports Mininet (a test keeps them equal)
SYNC_SETTINGS = ("mode", "interval", "periodic", "triggers", "replication", "k", "selection", "hold",
                 "budget_bandwidth", "budget_entries")
FTP_MODES = ("PASV", "EPSV", "PORT", "EPRT")
SWEEPABLE = (("topology", "nodes"), ("traffic", "sessions"))

DEFAULTS = {
    "description": "",
    "seed": 1,
    "repetitions": 1,
    "topology": {"nodes": 3, "clients": 2, "servers": 2},
    "cluster": {"sync": "none", "rules": "experiments/rules/ftp.rules", "interval": 1.0,
                "periodic": "differential", "triggers": list(TRIGGERS), "replication": "backup",
                "k": 1, "selection": "node", "hold": True, "hold_timeout": 0.05,
                "budget_bandwidth": 0.0, "budget_entries": 0, "failover": "none",
                "steering": "symmetric", "latency_ms": 0.0, "latency_via": "auto"},
    "traffic": {"kind": "ftp", "sessions": 24, "modes": list(FTP_MODES), "file_size": 262144,
                "files": 4, "concurrency": 4, "timeout": 3.0},
    "timeline": [],
}


class SpecError(ValueError):
    """A spec that cannot run; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Point:
    """One combination of swept values and one repetition."""

    params: dict
    repetition: int
    seed: int

    @property
    def name(self) -> str:
        tag = "-".join(f"{k.split('.')[-1]}{v}" for k, v in sorted(self.params.items()))
        return f"{tag or 'run'}-r{self.repetition}"


def load(path: str) -> dict:
    """Read, default and validate a spec; raise SpecError in one line."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as err:
        raise SpecError(f"cannot read spec {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    spec = _merge(DEFAULTS, raw, path, "")
    spec.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    validate(spec, path)
    return spec


def _merge(defaults: dict, given: dict, path: str, where: str) -> dict:
    out = {}
    for key, value in given.items():
        if key not in defaults and not (where == "" and key == "name"):
            known = ", ".join(sorted(defaults))
            raise SpecError(f"{path}: unknown field {where}{key!r} (known: {known})")
    for key, default in defaults.items():
        value = given.get(key, default)
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise SpecError(f"{path}: [{where}{key}] must be a table")
            value = _merge(default, value, path, f"{where}{key}.")
        out[key] = value
    if "name" in given:
        out["name"] = given["name"]
    return out


def _ints(value) -> list:
    return value if isinstance(value, list) else [value]


def validate(spec: dict, path: str = "<spec>") -> None:
    """Raise SpecError for the first thing in ``spec`` that cannot run."""
    def need(ok: bool, msg: str):
        if not ok:
            raise SpecError(f"{path}: {msg}")

    topo, cluster, traffic = spec["topology"], spec["cluster"], spec["traffic"]
    need(isinstance(spec["seed"], int), "seed must be an integer")
    need(isinstance(spec["repetitions"], int) and spec["repetitions"] >= 1,
         "repetitions must be an integer >= 1")
    for n in _ints(topo["nodes"]):
        need(isinstance(n, int) and 1 <= n <= MAX_NODES,
             f"topology.nodes = {n!r}: a cluster has 1..{MAX_NODES} nodes")
    for field in ("clients", "servers"):
        need(isinstance(topo[field], int) and 1 <= topo[field] <= 50,
             f"topology.{field} must be 1..50")
    try:
        sync_config(cluster).validate()
    except (TypeError, ValueError) as err:
        raise SpecError(f"{path}: cluster: {err}") from None
    need(isinstance(cluster["hold_timeout"], (int, float)) and cluster["hold_timeout"] > 0,
         "cluster.hold_timeout must be > 0 seconds")
    try:
        RuleSet.from_file(cluster["rules"])
    except RuleError as err:
        raise SpecError(f"{path}: cluster.rules: {err}") from None
    need(traffic["kind"] == "ftp", f"traffic.kind = {traffic['kind']!r}: only 'ftp' exists")
    for s in _ints(traffic["sessions"]):
        need(isinstance(s, int) and 1 <= s <= 100000, "traffic.sessions must be 1..100000")
    modes = traffic["modes"]
    need(isinstance(modes, list) and modes and all(m in FTP_MODES for m in modes),
         f"traffic.modes must be a non-empty list of {', '.join(FTP_MODES)}")
    need(isinstance(traffic["file_size"], int) and 1 <= traffic["file_size"] <= 1 << 30,
         "traffic.file_size must be 1 byte .. 1 GiB")
    need(isinstance(traffic["files"], int) and traffic["files"] >= 1, "traffic.files must be >= 1")
    need(isinstance(traffic["concurrency"], int) and 1 <= traffic["concurrency"] <= 64,
         "traffic.concurrency must be 1..64")
    need(isinstance(traffic["timeout"], (int, float)) and traffic["timeout"] > 0,
         "traffic.timeout must be > 0 seconds")
    need(cluster["failover"] in ("none", "backup", "spread"),
         "cluster.failover must be none, backup or spread")
    need(cluster["steering"] in ("symmetric", "asymmetric"),
         "cluster.steering must be symmetric or asymmetric")
    need(isinstance(cluster["latency_ms"], (int, float)) and 0 <= cluster["latency_ms"] <= 10000,
         "cluster.latency_ms (one-way delay between nodes) must be 0..10000")
    need(cluster["latency_via"] in ("auto", "netem", "node"),
         "cluster.latency_via must be auto (netem if the kernel has it), netem or node")
    need(cluster["latency_ms"] == 0 or cluster["sync"] != "none" or cluster["failover"] != "none",
         "cluster.latency_ms needs a cluster network: set cluster.sync (or failover)")
    need(isinstance(spec["timeline"], list), "timeline must be a list of [[timeline]] tables")
    smallest = min(_ints(topo["nodes"]))
    for i, event in enumerate(spec["timeline"], 1):
        problem = check(event, smallest) if isinstance(event, dict) else "not a table"
        need(problem is None, f"timeline entry {i}: {problem}")


def sync_config(cluster: dict) -> SyncConfig:
    """The SyncConfig a spec's [cluster] table asks for."""
    settings = {name: cluster[name] for name in SYNC_SETTINGS if name != "mode"}
    settings["triggers"] = tuple(settings["triggers"])
    return SyncConfig(mode=cluster["sync"], **settings)


def cluster_sync(cluster: dict) -> dict:
    """The sync settings handed to the cluster runner (and on to every node)."""
    settings = {name: cluster[name] for name in SYNC_SETTINGS if name != "mode"}
    return {"mode": cluster["sync"], **settings, "hold_timeout": cluster["hold_timeout"]}


def points(spec: dict) -> list[Point]:
    """Every swept combination times every repetition, each with its own seed."""
    axes = []
    for section, field in SWEEPABLE:
        value = spec[section][field]
        axes.append([(f"{section}.{field}", v) for v in _ints(value)])
    out = []
    for combo in itertools.product(*axes):
        params = dict(combo)
        for rep in range(spec["repetitions"]):
            out.append(Point(params, rep, spec["seed"] * 1000 + rep))
    return out


def resolve(spec: dict, point: Point) -> dict:
    """The spec with the point's swept values filled in."""
    resolved = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()}
    for dotted, value in point.params.items():
        section, field = dotted.split(".")
        resolved[section][field] = value
    resolved["seed"] = point.seed
    resolved["repetition"] = point.repetition
    return resolved
