"""Experiment 4: memory per node with backup groups against full replication (method 600)."""
from __future__ import annotations

import statistics
from collections import defaultdict

from experiments.analysis.points import duration, group, sync_counter
from experiments.analysis.stats import fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save


def predicted_share(variant_spec: dict, n: int) -> float:
    cl = variant_spec.get("cluster", {})
    if cl.get("replication") == "full":
        return 1.0
    return min(1 + int(cl.get("k", 1)), n) / n


def _entry_share(p: dict) -> float | None:
    """Mean over nodes of (own + backup entries) / the cluster's connections, at the snapshot."""
    if not p["snapshots"]:
        return None
    nodes = [s["sync"] for s in p["snapshots"][0]["nodes"].values() if s and "sync" in s]
    total = sum(s["entries_owned"] for s in nodes)
    if not total:
        return None
    return statistics.fmean((s["entries_owned"] + s["entries_backup"]) / total for s in nodes)


def scaling(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points, "topology.nodes")
    rows, series, worst = [], defaultdict(list), 0.0
    for (variant, n), pts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        n = n or pts[0]["spec"]["topology"]["nodes"]
        share = mean_ci([_entry_share(p) for p in pts])
        per_node = mean_ci([sync_counter(p, "bytes_sent") / n / duration(p) / 1e3 for p in pts])
        pred = predicted_share(pts[0]["spec"], n)
        if share[0] is not None:
            worst = max(worst, abs(share[0] - pred) - half_or_zero(share[1]))
        rows.append([variant, n, len(pts), fmt(*share), f"{pred:.3f}", fmt(*per_node)])
        series[variant].append((n, share, per_node, pred))
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
            for i, (variant, pts) in enumerate(sorted(series.items())):
                xs = [n for n, *_ in pts]
                axes[0].errorbar(xs, [s[0] for _, s, _, _ in pts],
                                 yerr=[half_or_zero(s[1]) for _, s, _, _ in pts],
                                 marker="o", capsize=3, color=f"C{i}", label=f"{variant}: measured")
                axes[0].plot(xs, [pr for *_, pr in pts], ls="--", color=f"C{i}",
                             label=f"{variant}: (1+k)/N" if variant != "full" else "full: 1")
                axes[1].errorbar(xs, [b[0] for _, _, b, _ in pts],
                                 yerr=[half_or_zero(b[1]) for _, _, b, _ in pts],
                                 marker="o", capsize=3, color=f"C{i}", label=variant)
            axes[0].set(xlabel="cluster size N", ylabel="entries per node / connections",
                        ylim=(0, 1.1), title="Memory: share of the table each node holds")
            axes[1].set(xlabel="cluster size N", ylabel="sync traffic per node (kB/s)",
                        title="Sync traffic per node")
            for ax in axes:
                ax.legend(fontsize=7)
            fig.suptitle("Experiment 4: memory and sync traffic against cluster size "
                         "(mean, 95% CI)", fontsize=9)
            figures = save(fig, exp_dir)
    measured = [r for r in rows if r[3] != "n/a"]
    if not measured:
        verdict, why = "not shown", "no snapshot was taken while sessions were open"
    else:
        verdict = "holds" if worst <= 0.05 else "does not hold"
        why = (f"largest distance between measured share and (1+k)/N beyond the CI: "
               f"{max(worst, 0):.3f} (tolerance 0.05) over {len(measured)} configurations")
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "N", "points", "entries per node / connections",
                       "predicted", "sync kB/s per node"], rows)}
