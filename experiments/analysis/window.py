"""Experiment 10: the TCP window across a failover, replicated or not, against its cost."""
from __future__ import annotations

import statistics

from experiments.analysis.failover import affected_sessions
from experiments.analysis.points import group
from experiments.analysis.stats import fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save

SURVIVE, STALL = 0.8, 0.2  # shares of the crash's sessions: "survive" and "stall" verdicts
CRASHED = "fw1"
# the variants whose backups take over without a stale window, and the stale one
CARRIES_ON = ("change", "scale", "off", "schedule_liberal")
STALE = "schedule"


def sync_rate(p: dict, node: str = CRASHED) -> float | None:
    """Bytes a second of state synchronization ``node`` sent between the point's first two
    snapshots (taken while the downloads ran, before the crash): data messages and acks."""
    taken = [(s["t"], s["nodes"].get(node)) for s in p["snapshots"] if s["nodes"].get(node)]
    if len(taken) < 2:
        return None
    (t0, a), (t1, b) = taken[0], taken[1]

    def sent(stats):
        counters = stats.get("sync", {}).get("counters", {})
        return counters.get("data_bytes_sent", 0) + counters.get("ack_bytes_sent", 0)
    return (sent(b) - sent(a)) / (t1 - t0) if t1 > t0 else None


def window_records(p: dict, node: str = CRASHED) -> int:
    """Window updates ``node`` had sent by the last snapshot before the crash."""
    taken = [s["nodes"][node] for s in p["snapshots"] if s["nodes"].get(node)]
    return taken[-1].get("sync", {}).get("counters", {}).get("window_updates", 0) if taken else 0


def out_of_window(p: dict) -> int:
    """Segments the surviving nodes dropped as out of their window."""
    return sum(s.get("drops", {}).get("tcp_out_of_window", 0) for s in p["stats"].values()
               if isinstance(s, dict))


def window(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points)
    rows, survival, rate = [], {}, {}
    for (variant,), pts in sorted(groups.items()):
        shares, stalls, n_aff = [], [], 0
        for p in pts:
            aff = affected_sessions(p)
            n_aff += len(aff)
            if aff:
                shares.append(sum(r["outcome"] == "ok" for r in aff) / len(aff))
            stalls += [r.get("max_gap", 0.0) for r in aff if r["outcome"] == "ok"]
        survival[variant] = mean_ci(shares)
        rate[variant] = mean_ci([r / 1e3 for r in map(sync_rate, pts) if r is not None])
        stall = statistics.median(stalls) if stalls else None
        rows.append([variant, len(pts), n_aff, fmt(*survival[variant]),
                     "n/a" if stall is None else f"{stall * 1000:.0f}",
                     sum(map(out_of_window, pts)), fmt(*rate[variant]),
                     round(statistics.mean(map(window_records, pts)))])
    names = [v for v, in sorted(groups)]
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            for ax, values, label in ((axes[0], survival, "share of the crashed node's sessions "
                                       "that survive"),
                                      (axes[1], rate, f"sync sent by {CRASHED} before the crash "
                                       "(kB/s)")):
                for i, v in enumerate(names):
                    m, h = values[v]
                    ax.barh(i, m or 0, xerr=half_or_zero(h), capsize=3, color=f"C{i}")
                    ax.text((m or 0), i, " n/a" if m is None else f" {m:.2f}", va="center",
                            fontsize=7)
                ax.set_yticks(range(len(names)), names)
                ax.invert_yaxis()
                ax.set(xlabel=label)
            axes[0].set(xlim=(0, 1.2), title="Survival of a node crash")
            axes[1].set(title="What replicating the window costs")
            fig.suptitle("Experiment 10: fw1 crashes during long FTP downloads; TCP windows "
                         "tracked strictly (schedule_liberal: liberal); 95% CI", fontsize=9)
            figures = save(fig, exp_dir)
    verdict, why = "not shown", "needs the variants " + ", ".join(CARRIES_ON + (STALE,))
    needed = CARRIES_ON + (STALE,)
    if all(v in survival and survival[v][0] is not None for v in needed) \
            and rate.get("change", (None,))[0] is not None \
            and rate.get("scale", (None,))[0] is not None:
        carries = all(survival[v][0] >= SURVIVE for v in CARRIES_ON)
        stalls = survival[STALE][0] <= STALL
        costs = rate["change"][0] > rate["scale"][0]
        verdict = "holds" if carries and stalls and costs else "does not hold"
        why = ("survival: " + "; ".join(f"{v} {fmt(*survival[v])}" for v in names)
               + f"; sync kB/s before the crash: change {fmt(*rate['change'])} vs scale "
               f"{fmt(*rate['scale'])}")
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "points", "sessions hit by the crash", "share surviving",
                       "median stall of survivors (ms)", "out-of-window drops",
                       f"sync kB/s of {CRASHED}", "window records sent"], rows)}
