"""Figures from a run's raw data (sessions.csv) alone; PNG and PDF.

Reproduction campaigns (results/reproduce*/) are analysed by
experiments/analysis/, which writes their figures and REPORT.md; both share
experiments/analysis/style.py.

    fwcluster plot results/demo-...   # one run
    fwcluster figures                 # every run under results/
"""
from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict

from experiments.analysis.report import report
from experiments.analysis.style import STYLE, plt, save

COLORS = {"ok": "#4c9a2a", "other_node": "#d1495b", "failed": "#8d8d8d"}


def read_sessions(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "sessions.csv"), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def category(rec: dict) -> str:
    """ok, other_node (the data connection went to another node than the control
    connection and failed there) or failed, of a sessions.csv row or a raw record."""
    if rec["outcome"] == "ok":
        return "ok"
    if rec.get("same_node") in (False, "False"):
        return "other_node"
    return "failed"


def sessions_per_node(rows: list[dict], run_dir: str) -> list[str]:
    """Per cluster size, per node carrying the control connection: outcomes."""
    sizes = sorted({int(r["nodes"]) for r in rows})
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3), squeeze=False,
                                 sharey=True)
        for ax, n in zip(axes[0], sizes):
            counts = defaultdict(lambda: defaultdict(int))
            for r in rows:
                if int(r["nodes"]) == n:
                    counts[r["control_node"] or "?"][category(r)] += 1
            nodes = sorted(counts)
            bottom = [0] * len(nodes)
            for cat, label in (("ok", "ok"), ("other_node", "failed: data on another node"),
                               ("failed", "failed: other")):
                vals = [counts[x][cat] for x in nodes]
                ax.bar(nodes, vals, bottom=bottom, color=COLORS[cat], label=label)
                bottom = [b + v for b, v in zip(bottom, vals)]
            ax.set_title(f"{n} node{'s' if n > 1 else ''}, no sync")
            ax.set_xlabel("node carrying the control connection")
        axes[0][0].set_ylabel("FTP sessions")
        axes[0][-1].legend(loc="upper right", fontsize=7)
        return save(fig, run_dir, "sessions_per_node")


def success_vs_prediction(rows: list[dict], run_dir: str) -> list[str]:
    """Share of sessions that succeed per cluster size, against 1/N."""
    sizes = sorted({int(r["nodes"]) for r in rows})
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(3.6, 3))
        for i, n in enumerate(sizes):
            sel = [r for r in rows if int(r["nodes"]) == n]
            k = sum(r["outcome"] == "ok" for r in sel)
            lo, hi = wilson(k, len(sel))
            share = k / len(sel) if sel else 0
            err = [[max(0.0, share - lo)], [max(0.0, hi - share)]]  # float noise at 0 and 1
            ax.bar(i, share, color=COLORS["ok"], yerr=err, capsize=4,
                   label="measured (95% CI)" if i == 0 else None)
            ax.plot([i - 0.4, i + 0.4], [1 / n, 1 / n], color="black", ls="--",
                    label="1/N: data lands on the control node" if i == 0 else None)
        ax.set_xticks(range(len(sizes)), [str(n) for n in sizes])
        ax.set_xlabel("cluster size N (no synchronization)")
        ax.set_ylabel("FTP sessions that succeed")
        ax.set_ylim(0, 1.15)
        ax.legend(fontsize=7, loc="upper right")
        return save(fig, run_dir, "success_vs_cluster_size")


def plot_run(run_dir: str) -> list[str]:
    """Every figure of one run, from its raw data."""
    spec = os.path.join(run_dir, "spec.resolved.json")
    if os.path.exists(spec):
        with open(spec, encoding="utf-8") as fh:
            if json.load(fh).get("analysis") == "story":  # the demo's: summary.png, SUMMARY.md
                from experiments.analysis.story import story
                return story(run_dir)  # from the points' raw data
    rows = read_sessions(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}/sessions.csv holds no sessions")
    return sessions_per_node(rows, run_dir) + success_vs_prediction(rows, run_dir)


def plot_all(results: str = "results") -> list[str]:
    """Regenerate the figures of every run folder under ``results``."""
    paths = []
    for name in sorted(os.listdir(results)) if os.path.isdir(results) else []:
        run_dir = os.path.join(results, name)
        if os.path.exists(os.path.join(run_dir, "sessions.csv")):
            paths += plot_run(run_dir)
        elif os.path.isdir(os.path.join(run_dir, "manifests")):  # a reproduction campaign
            path, figures = report(run_dir)
            paths += figures + [path]
    return paths
