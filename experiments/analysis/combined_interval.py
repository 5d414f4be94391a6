"""Experiment 8: combined synchronization lets the periodic interval grow (method 500)."""
from __future__ import annotations

from collections import defaultdict

from experiments.analysis.delayed import sync_bytes
from experiments.analysis.failover import affected_sessions
from experiments.analysis.points import duration, group, refused_share, sync_counter
from experiments.analysis.stats import combine, compare_intervals, fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save

# How much worse than on-demand a share may be and still count as on-demand's reliability:
# one session in twenty (of twelve sessions a point, less than one).
TOLERANCE = 0.05


def lost_share(p: dict) -> float | None:
    """Share of the sessions the crash hit that did not survive it (None: it hit none)."""
    hit = affected_sessions(p)
    return sum(r["outcome"] != "ok" for r in hit) / len(hit) if hit else None


def periodic_share(p: dict) -> float | None:
    """Share of the sync records the nodes queued that periodic rounds queued."""
    total = sync_counter(p, "records_queued")
    return sync_counter(p, "records_queued_periodic") / total if total else None


def harm(p: dict) -> float | None:
    """What reliability costs a point: the larger of its refused and lost shares."""
    lost = lost_share(p)
    return max(refused_share(p), lost if lost is not None else 0.0)


def kept(ci: tuple, reference: tuple) -> str:
    """Whether ``ci`` (a harm's mean, half) is within TOLERANCE of ``reference``'s upper
    bound: "holds" when its whole interval is, "does not hold" when none of it is."""
    bound = reference[0] + half_or_zero(reference[1]) + TOLERANCE
    if ci[0] is None:
        return "not shown"
    if ci[0] + half_or_zero(ci[1]) <= bound:
        return "holds"
    return "does not hold" if ci[0] - half_or_zero(ci[1]) > bound else "not shown"


def combined_interval(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points, "cluster.interval")
    rows, series, by = [], defaultdict(list), {}
    for (variant, interval), pts in sorted(groups.items(),
                                           key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        interval = interval if interval is not None else pts[0]["spec"]["cluster"].get("interval")
        sync = pts[0]["spec"]["cluster"]["sync"]
        cis = {"refused": mean_ci([refused_share(p) for p in pts]),
               "lost": mean_ci([x for p in pts if (x := lost_share(p)) is not None]),
               "harm": mean_ci([harm(p) for p in pts]),
               "share": mean_ci([x for p in pts if (x := periodic_share(p)) is not None]),
               "kbps": mean_ci([sync_bytes(p) / duration(p) / 1e3 for p in pts])}
        by[(variant, interval if sync != "ondemand" else None)] = cis
        rows.append([variant if sync == "ondemand" else f"{variant}, every {interval:g} s",
                     len(pts), fmt(*cis["refused"]), fmt(*cis["lost"]),
                     fmt(*cis["share"]), fmt(*cis["kbps"])])
        if sync != "ondemand":
            series[variant].append((interval, cis))
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        figures = _draw(series, by.get(("ondemand", None)), exp_dir)
    verdict, why = _judge(by, series)
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "points", "data connections refused (share of sessions)",
                       "lost at the crash (share of the sessions it hit)",
                       "periodic rounds' share of sync records", "sync kB/s (data and acks)"],
                      rows)}


def _judge(by: dict, series: dict) -> tuple[str, str]:
    od = by.get(("ondemand", None))
    combined, periodic = dict(series.get("combined", [])), dict(series.get("periodic", []))
    intervals = sorted(combined)
    if od is None or len(intervals) < 2 or not periodic:
        return "not shown", "the on-demand, periodic and combined variants are not all present"
    parts = {}
    # 1. at every interval, combined harms no more than on-demand does (within TOLERANCE)
    keeps = [kept(combined[i]["harm"], od["harm"]) for i in intervals]
    parts["combined keeps on-demand's reliability at every interval"] = (
        "holds" if all(k == "holds" for k in keeps) else
        "does not hold" if "does not hold" in keeps else "not shown")
    # 2. periodic alone does not, at the longest interval
    longest = max(periodic)
    alone = kept(periodic[longest]["harm"], od["harm"])
    parts[f"periodic alone loses it at {longest:g} s"] = {
        "does not hold": "holds", "holds": "does not hold"}.get(alone, "not shown")
    # 3. the periodic rounds' share of records falls as the interval grows
    short, long_ = combined[intervals[0]]["share"], combined[intervals[-1]]["share"]
    parts["combined's periodic share falls with the interval"] = (
        "not shown" if short[0] is None or long_[0] is None
        else compare_intervals(short, long_))
    verdict = combine(parts.values())
    why = ("decision rule: a variant keeps on-demand's reliability when the 95% interval of "
           "its harm (the larger of its refused and lost shares, per repetition) lies below "
           f"on-demand's upper bound + {TOLERANCE:g}; the share falls when the intervals at "
           "the shortest and longest interval do not overlap. "
           + "; ".join(f"{k}: {v}" for k, v in parts.items())
           + ". Harm: on-demand " + fmt(*od["harm"]) + "; combined "
           + ", ".join(f"every {i:g} s {fmt(*combined[i]['harm'])}" for i in intervals)
           + "; periodic " + ", ".join(f"every {i:g} s {fmt(*periodic[i]['harm'])}"
                                       for i in sorted(periodic))
           + ". Periodic share of records, combined: "
           + ", ".join(f"every {i:g} s {fmt(*combined[i]['share'])}" for i in intervals))
    for interval, cis in series.get("combined_all", []):
        why += (f". With every trigger on (combined_all, every {interval:g} s): harm "
                f"{fmt(*cis['harm'])}, periodic share {fmt(*cis['share'])}")
    return verdict, why


def _draw(series: dict, od: dict | None, exp_dir: str) -> list[str]:
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
        if od is not None:
            m, h = od["harm"]
            line = axes[0].axhline(m, ls="--", lw=1, color="C2", label="ondemand")
            if h is not None:
                axes[0].axhspan(m - h, m + h, alpha=0.15, color=line.get_color())
        for variant, pts in sorted(series.items()):
            pts = sorted(pts, key=lambda x: x[0])
            xs = [i for i, _ in pts]
            for ax, key in ((axes[0], "harm"), (axes[1], "share")):
                ys = [c[key][0] if c[key][0] is not None else float("nan") for _, c in pts]
                ax.errorbar(xs, ys, yerr=[half_or_zero(c[key][1]) for _, c in pts],
                            marker="o", capsize=3, label=variant)
        axes[0].set(xscale="log", xlabel="periodic interval (s)", ylim=(-0.05, 1.05),
                    ylabel="share of sessions",
                    title="Refused or lost at the crash (the larger)")
        axes[1].set(xscale="log", xlabel="periodic interval (s)", ylim=(-0.05, 1.05),
                    ylabel="share of sync records", title="Sent by periodic rounds")
        for ax in axes:
            ax.legend(fontsize=7)
        fig.suptitle("Experiment 8: combined lets the interval grow (mean, 95% CI over "
                     "repetitions)", fontsize=9)
        return save(fig, exp_dir)
