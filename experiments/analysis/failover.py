"""Experiment 3: a crash under load, survived with backup sync (method 700)."""
from __future__ import annotations

import statistics
from collections import defaultdict

from experiments.analysis.points import group
from experiments.analysis.stats import fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save


def first_fault(p: dict, kind: str) -> tuple[float, str] | None:
    """Time and node of the point's first fault of ``kind`` (crash, leave, restart...)."""
    for e in p["events"]:
        if e["event"] == f"fault_{kind}":
            return e["t"], e.get("node")
    return None


def affected_sessions(p: dict) -> list[dict]:
    """Sessions the crash hit: downloading at the crash with a connection on the crashed
    node; or, where the spec pauses between announcing the data connection and opening it,
    sessions in that pause whose control connection (and the expectation) was on the
    crashed node. Sessions that had failed already, say for want of state, are not counted."""
    crash = first_fault(p, "crash")
    if crash is None:
        return []
    t, node = crash
    if p["spec"].get("traffic", {}).get("pause_before_data"):
        return [r for r in p["records"] if r.get("t_announced") and r["t_announced"] < t
                and t < (r.get("t_first_byte") or r["t_end"]) and r.get("control_node") == node]
    return [r for r in p["records"] if r.get("t_first_byte") and r["t_first_byte"] < t < r["t_end"]
            and node in (r.get("control_node"), r.get("data_node"))]


def goodput(p: dict, t0: float) -> dict[float, float]:
    """Goodput of all the point's sessions (Mbit/s) per 0.1 s from their byte bins, by the
    bin's time from ``t0``."""
    bins: dict[float, float] = defaultdict(float)
    for r in p["records"]:
        for slot, nbytes in (r.get("bins") or {}).items():
            bins[round(int(slot) * 0.1 - t0, 1)] += nbytes * 8 / 0.1 / 1e6
    return dict(bins)


def failover(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points)
    rows, survival, curves = [], {}, {}
    for (variant,), pts in sorted(groups.items()):
        shares, stalls, n_aff = [], [], 0
        bins = defaultdict(float)
        for p in pts:
            aff = affected_sessions(p)
            n_aff += len(aff)
            if aff:
                shares.append(sum(r["outcome"] == "ok" for r in aff) / len(aff))
            if not p["spec"].get("traffic", {}).get("pause_before_data"):  # else no download ran
                stalls += [r.get("max_gap", 0.0) for r in aff if r["outcome"] == "ok"]
            crash = first_fault(p, "crash")
            if crash:
                for rel, mbps in goodput(p, crash[0]).items():
                    bins[rel] += mbps / len(pts)
        survival[variant] = mean_ci(shares)
        curves[variant] = sorted(bins.items())
        stall = statistics.median(stalls) if stalls else None
        rows.append([variant, len(pts), n_aff, fmt(*survival[variant]),
                     "n/a" if stall is None else f"{stall * 1000:.0f}"])
    names = [v for v, in sorted(groups)]
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
            for i, v in enumerate(names):
                m, h = survival[v]
                axes[0].barh(i, m or 0, xerr=half_or_zero(h), capsize=3, color=f"C{i}")
                axes[0].text((m or 0) + 0.02, i, "n/a" if m is None else f"{m:.2f}",
                             va="center", fontsize=7)
            axes[0].set_yticks(range(len(names)), names)
            axes[0].invert_yaxis()
            axes[0].set(xlabel="share of the crashed node's sessions that survive", xlim=(0, 1.15),
                        title="Survival of a node crash")
            for i, v in enumerate(names):
                xs = [x for x, _ in curves[v] if -1.5 <= x <= 4]
                ys = [y for x, y in curves[v] if -1.5 <= x <= 4]
                axes[1].plot(xs, ys, label=v, color=f"C{i}", lw=1)
            axes[1].axvline(0, color="black", lw=0.8, ls=":")
            axes[1].set(xlabel="time from the crash (s)", ylabel="goodput, all sessions (Mbit/s)",
                        title="Goodput across the crash (mean of repetitions)")
            axes[1].legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.18))
            fig.suptitle("Experiment 3: fw1 crashes during long FTP downloads (_at_announce: "
                         "between announcing the data connection and opening it; 95% CI)",
                         fontsize=9)
            figures = save(fig, exp_dir)
    synced = [v for v in names if v.split("_at_")[0] in ("ondemand", "combined", "spread")]
    lost = [v for v in names if v.split("_at_")[0] in ("none", "home")]
    verdict, why = "not shown", "needs a synchronized and an unsynchronized variant"
    if synced and lost and all(survival[v][0] is not None for v in synced + lost):
        ok_synced = all(survival[v][0] >= 0.8 for v in synced)
        ok_lost = all(survival[v][0] <= 0.2 for v in lost)
        verdict = "holds" if ok_synced and ok_lost else "does not hold"
        why = "survival: " + "; ".join(f"{v} {fmt(*survival[v])}" for v in names)
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "points", "sessions hit by the crash", "share surviving",
                       "median stall of survivors (ms)"], rows)}
