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
judges it (experiments/analysis/).
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import tomllib
from dataclasses import dataclass, field

from experiments import schema
from experiments.schema import FTP_MODES  # noqa: F401  (re-exported for the CLI)
from experiments.timeline import check
from nodes.settings import SettingsError, SyncSettings, parse
from topo.addresses import MAX_NODES  # noqa: F401  (re-exported)

SECTIONS = tuple(schema.SECTIONS)  # whose scalar fields a list sweeps

DEFAULTS = {
    "description": "",
    "seed": 1,
    "repetitions": 1,
    **{section: schema.defaults(section) for section in SECTIONS},
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
            raise SpecError(f"{path}: unknown field {where + key!r} (known: {known})")
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


def validate(spec: dict, path: str = "<spec>") -> None:
    """Raise SpecError for the first thing in ``spec`` (one point: no sweeps) that cannot run."""
    def need(ok: bool, msg: str):
        if not ok:
            raise SpecError(f"{path}: {msg}")

    need(isinstance(spec["seed"], int), "seed must be an integer")
    need(isinstance(spec["repetitions"], int) and spec["repetitions"] >= 1,
         "repetitions must be an integer >= 1")
    for section, model in schema.SECTIONS.items():
        try:
            parse(model, spec[section], f"{section}.")
        except SettingsError as err:
            raise SpecError(f"{path}: {err}") from None
    need(isinstance(spec["claim"], str) and isinstance(spec["analysis"], str),
         "claim and analysis must be strings")
    need(isinstance(spec["timeline"], list), "timeline must be a list of [[timeline]] tables")
    for i, event in enumerate(spec["timeline"], 1):
        problem = check(event, spec["topology"]["nodes"]) if isinstance(event, dict) \
            else "not a table"
        need(problem is None, f"timeline entry {i}: {problem}")


def cluster_settings(cluster: dict) -> schema.Cluster:
    """A spec's [cluster] table as the model (SettingsError in one line)."""
    return parse(schema.Cluster, cluster, "cluster.")


def sync_config(cluster: dict) -> SyncSettings:
    """The sync settings a spec's [cluster] table starts every node with."""
    return cluster_settings(cluster).sync_settings()


def cluster_sync(cluster: dict) -> dict:
    """The sync settings handed to the cluster runner (and on to every node)."""
    return sync_config(cluster).as_dict()


def _axes(spec: dict, path: str) -> list[list[tuple[str, object]]]:
    """The swept fields: a list where the default is a single value."""
    axes = []
    for section in SECTIONS:
        for name, default in DEFAULTS[section].items():
            value = spec[section][name]
            if isinstance(value, list) and not isinstance(default, list):
                if not value:
                    raise SpecError(f"{path}: {section}.{name} = []: an empty list sweeps nothing "
                                    "(give a value or a list of values)")
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
        for combo in itertools.product(*_axes(base, path)):
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
