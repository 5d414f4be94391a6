"""Experiment specs: TOML files that say what to run; validated without root.

A spec has a name, a seed, repetitions, a topology, a cluster configuration,
traffic and a timeline of faults. A list where one value is expected (for
example ``nodes = [1, 3]`` or ``interval = [0.05, 0.5]``) sweeps it: the run
covers every combination. ``[[variants]]`` tables, each with a ``label``,
override parts of the spec (``[variants.cluster]``...) and add faults to its
timeline (``[[variants.timeline]]``), for comparisons that are not a grid (periodic sync against on-demand); sweeps apply inside each
variant. ``[quick]`` holds what ``--quick`` changes (fewer repetitions,
smaller traffic, ``variants = [labels]`` to keep): the CI variant of a spec.
A reproduction experiment names its ``claim`` and the ``analysis`` that
judges it (experiments/analysis.py).
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import tomllib
from dataclasses import dataclass, field

from nodes.rules import RuleError, RuleSet
from experiments.timeline import check
from experiments.files import SIZE_DISTS
from nodes.sync import TRIGGERS, SyncConfig

MAX_NODES = 8  # as topo.cluster.MAX_NODES, which imports Mininet (a test keeps them equal)
SYNC_SETTINGS = ("mode", "interval", "periodic", "triggers", "replication", "k", "selection", "hold",
                 "budget_bandwidth", "budget_entries", "delay")
FTP_MODES = ("PASV", "EPSV", "PORT", "EPRT")
SECTIONS = ("topology", "cluster", "traffic")  # whose scalar fields a list sweeps

DEFAULTS = {
    "description": "",
    "seed": 1,
    "repetitions": 1,
    "topology": {"nodes": 3, "clients": 2, "servers": 2},
    "cluster": {"sync": "none", "rules": "experiments/rules/ftp.rules", "interval": 1.0,
                "periodic": "differential", "triggers": list(TRIGGERS), "replication": "backup",
                "k": 1, "selection": "node", "hold": True, "hold_timeout": 0.05,
                "budget_bandwidth": 0.0, "budget_entries": 0, "delay": 0.0, "failover": "none",
                "steering": "symmetric", "latency_ms": 0.0, "latency_via": "auto",
                "capture": []},
    "traffic": {"kind": "ftp", "sessions": 24, "modes": list(FTP_MODES), "file_size": 262144,
                "files": 4, "size_dist": "fixed", "concurrency": 4, "timeout": 3.0,
                "throttle": 0, "pause_before_data": 0.0},
    "timeline": [],
    "claim": "",
    "analysis": "",
}
TOP_ONLY = ("name", "variants", "quick")


class SpecError(ValueError):
    """A spec that cannot run; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Point:
    """One variant, one combination of swept values and one repetition."""

    params: dict
    repetition: int
    seed: int
    variant: str = ""
    spec: dict = field(default=None, compare=False, repr=False)  # resolved, scalar

    @property
    def name(self) -> str:
        tag = "-".join(f"{k.split('.')[-1]}{v}" for k, v in sorted(self.params.items()))
        parts = [p for p in (self.variant, tag) if p]
        return f"{'-'.join(parts) or 'run'}-r{self.repetition}"


def load(path: str, quick: bool = False) -> dict:
    """Read, default and validate a spec (its --quick form if asked); raise SpecError."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as err:
        raise SpecError(f"cannot read spec {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from None
    variants = raw.pop("variants", [])
    quick_part = raw.pop("quick", {})
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise SpecError(f"{path}: variants must be [[variants]] tables")
    if not isinstance(quick_part, dict):
        raise SpecError(f"{path}: [quick] must be a table")
    if quick:
        keep = quick_part.pop("variants", None)
        raw = _deep_update(raw, quick_part)
        if keep is not None:
            missing = set(keep) - {v.get("label") for v in variants}
            if missing:
                raise SpecError(f"{path}: quick.variants names unknown labels {sorted(missing)}")
            variants = [v for v in variants if v.get("label") in keep]
    spec = _merge(DEFAULTS, raw, path, "")
    spec.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    spec["variants"] = [_variant(v, path, i) for i, v in enumerate(variants, 1)]
    labels = [v["label"] for v in spec["variants"]]
    if len(labels) != len(set(labels)):
        raise SpecError(f"{path}: variant labels must differ ({', '.join(labels)})")
    for point in points(spec, path):  # every combination must be able to run
        if point.repetition == 0:
            where = f"{path} [{point.variant}]" if point.variant else path
            validate(point.spec, where)
    return spec


def _variant(raw: dict, path: str, i: int) -> dict:
    label = raw.get("label")
    if not isinstance(label, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.]*", label):
        raise SpecError(f"{path}: variant {i} needs a label of a-z, 0-9, '_' or '.'")
    overrides = {k: v for k, v in raw.items() if k != "label"}
    for key, value in overrides.items():
        if key not in (*SECTIONS, "timeline"):
            raise SpecError(f"{path}: variant {label!r}: cannot override {key!r} "
                            f"(use {', '.join(SECTIONS)} or timeline)")
        if key in SECTIONS:
            _merge(DEFAULTS[key], value, path, f"variants.{label}.{key}.")  # unknown fields
    return {"label": label, "overrides": overrides}


def _deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def _merge(defaults: dict, given: dict, path: str, where: str) -> dict:
    if not isinstance(given, dict):
        raise SpecError(f"{path}: [{where.rstrip('.')}] must be a table")
    out = {}
    for key, value in given.items():
        if key not in defaults and not (where == "" and key in TOP_ONLY):
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
    need(traffic["size_dist"] in SIZE_DISTS,
         f"traffic.size_dist = {traffic['size_dist']!r}: use {' or '.join(SIZE_DISTS)}")
    need(isinstance(traffic["concurrency"], int) and 1 <= traffic["concurrency"] <= 64,
         "traffic.concurrency must be 1..64")
    need(isinstance(traffic["timeout"], (int, float)) and traffic["timeout"] > 0,
         "traffic.timeout must be > 0 seconds")
    need(isinstance(traffic["throttle"], (int, float)) and traffic["throttle"] >= 0,
         "traffic.throttle must be bytes per second a client reads (0: as fast as it can)")
    need(isinstance(traffic["pause_before_data"], (int, float))
         and 0 <= traffic["pause_before_data"] <= 60,
         "traffic.pause_before_data must be 0..60 seconds (between announcing the data "
         "connection and opening it)")
    need(isinstance(spec["claim"], str) and isinstance(spec["analysis"], str),
         "claim and analysis must be strings")
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
    capture = cluster["capture"]
    need(isinstance(capture, list) and all(
        isinstance(c, str) and (c == "sync" or re.fullmatch(r"(c|srv|fw)\d+-eth\d", c))
        for c in capture),
        'cluster.capture must list "sync" and/or host interfaces such as "c1-eth0", '
        '"fw2-eth1" (pcap files in each point\'s pcap/ folder)')
    need("sync" not in capture or cluster["sync"] != "none" or cluster["failover"] != "none",
         'cluster.capture "sync" needs a cluster network: set cluster.sync (or failover)')
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


def _axes(spec: dict) -> list[list[tuple[str, object]]]:
    """The swept fields: a list where the default is a single value."""
    axes = []
    for section in SECTIONS:
        for name, default in DEFAULTS[section].items():
            value = spec[section][name]
            if isinstance(value, list) and not isinstance(default, list):
                axes.append([(f"{section}.{name}", v) for v in value])
    return axes


def points(spec: dict, path: str = "<spec>") -> list[Point]:
    """Every variant, swept combination and repetition, each with its resolved spec.

    Repetition r has seed ``seed * 1000 + r`` in every variant, so variants are
    compared on the same workloads.
    """
    out = []
    for variant in spec.get("variants") or [None]:
        base = copy.deepcopy({k: v for k, v in spec.items() if k != "variants"})
        label = ""
        if variant is not None:
            label = variant["label"]
            for key, value in variant["overrides"].items():
                base[key] = (_merge(DEFAULTS[key], _deep_update(base[key], value), path,
                                    f"variants.{label}.{key}.")
                             if key in SECTIONS else base[key] + copy.deepcopy(value))
        for combo in itertools.product(*_axes(base)):
            params = dict(combo)
            resolved = copy.deepcopy(base)
            for dotted, value in params.items():
                section, name = dotted.split(".")
                resolved[section][name] = value
            for rep in range(spec["repetitions"]):
                seed = spec["seed"] * 1000 + rep
                out.append(Point(params, rep, seed, label,
                                 {**resolved, "seed": seed, "repetition": rep, "variant": label}))
    return out


def resolve(spec: dict, point: Point) -> dict:
    """The spec of one point: variant applied, swept values filled in."""
    return copy.deepcopy(point.spec)
