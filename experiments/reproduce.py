"""The reproduction suite: every experiment spec in experiments/specs/reproduce/.

    fwcluster reproduce                  # all experiments, all repetitions, then the report
    fwcluster reproduce --quick          # the CI form: few points, same raw data and figures
    fwcluster reproduce --shard 2/8      # every 8th point from the 2nd: one machine's share
    fwcluster reproduce --only e2,e3     # some experiments

A campaign folder (results/reproduce/, or results/reproduce-quick/) holds one
folder per experiment with its spec and one folder per point; a point folder
with point.json is complete and is not run again, so an interrupted campaign
resumes where it stopped. Shards run on different machines write disjoint
point folders of the same tree: copy them into one folder (rsync, or the
batch scheduler's staging) and ``fwcluster figures`` makes the figures and
REPORT.md from all of them. Each shard also leaves its manifest (versions,
host, commit, the points it ran) under manifests/.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time

from experiments import spec as specs
from experiments.run import Progress, manifest, run_point

SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs", "reproduce")


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 1 <= i <= n; ValueError in one line otherwise."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: use i/n, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: need 1 <= i <= n")
    return i, n


def suite(only: list[str] | None = None, quick: bool = False) -> list[tuple[str, dict]]:
    """(spec path, spec) of every experiment of the suite, in order."""
    paths = sorted(glob.glob(os.path.join(SUITE, "*.toml")))
    if only:
        chosen = [p for p in paths if any(os.path.basename(p).startswith(o) for o in only)]
        if not chosen:
            names = ", ".join(os.path.basename(p)[:-5] for p in paths)
            raise ValueError(f"--only {','.join(only)} matches no experiment (have: {names})")
        paths = chosen
    return [(p, specs.load(p, quick=quick)) for p in paths]


def plan(experiments: list[tuple[str, dict]], shard: tuple[int, int] = (1, 1)) -> list[tuple]:
    """(spec, point) pairs of this shard: every n-th point of the whole suite, from the i-th."""
    i, n = shard
    every = [(spec, point) for _, spec in experiments for point in specs.points(spec)]
    return [pair for k, pair in enumerate(every) if k % n == i - 1]


def campaign_dir(results: str, quick: bool) -> str:
    return os.path.join(results, "reproduce-quick" if quick else "reproduce")


def reproduce(results: str = "results", quick: bool = False, shard: tuple[int, int] = (1, 1),
              only: list[str] | None = None) -> str:
    """Run this shard's points that are not done yet; return the campaign folder."""
    experiments = suite(only, quick)
    folder = campaign_dir(results, quick)
    todo = plan(experiments, shard)
    for path, spec in experiments:
        exp_dir = os.path.join(folder, spec["name"])
        os.makedirs(os.path.join(exp_dir, "points"), exist_ok=True)
        shutil.copy(path, os.path.join(exp_dir, "spec.toml"))
        with open(os.path.join(exp_dir, "spec.resolved.json"), "w", encoding="utf-8") as fh:
            json.dump({**spec, "quick": quick}, fh, indent=2)
    info = manifest({"name": "reproduce", "seed": None, "repetitions": None})
    info.update(quick=quick, shard=f"{shard[0]}/{shard[1]}",
                points=[f"{s['name']}/{p.name}" for s, p in todo])
    os.makedirs(os.path.join(folder, "manifests"), exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    manifest_path = os.path.join(folder, "manifests",
                                 f"shard-{shard[0]}-of-{shard[1]}-{stamp}.json")
    with open(manifest_path, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)

    pending = [(s, p) for s, p in todo if not _done(folder, s, p)]
    print(f"[reproduce] {len(todo)} point(s) in shard {shard[0]}/{shard[1]}, "
          f"{len(todo) - len(pending)} already done, writing {folder}", flush=True)
    progress = Progress("reproduce", len(pending))
    for spec, point in pending:
        out = os.path.join(folder, spec["name"], "points", point.name)
        shutil.rmtree(out, ignore_errors=True)  # a point cut short is run again whole
        os.makedirs(out)
        progress.name = f"{spec['name']} rep {point.repetition + 1}/{spec['repetitions']}"
        run_point(spec, point, out, progress)
        progress.finished()
    info["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(manifest_path, "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    return folder


def _done(folder: str, spec: dict, point: specs.Point) -> bool:
    return os.path.exists(os.path.join(folder, spec["name"], "points", point.name, "point.json"))


def missing(folder: str, quick: bool) -> list[str]:
    """Points of the suite that no shard has finished in ``folder``."""
    experiments = [(p, s) for p, s in suite(quick=quick)
                   if os.path.isdir(os.path.join(folder, s["name"]))]
    return [f"{s['name']}/{p.name}" for s, p in plan(experiments) if not _done(folder, s, p)]
