"""Experiment 1: periodic synchronization leaves a window in which a related connection fails."""
from __future__ import annotations
from collections import defaultdict

from experiments.analysis.points import duration, failed_share, group, refused_share, sync_counter
from experiments.analysis.stats import fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save


def periodic_window(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points, "cluster.interval")
    rows, series = [], defaultdict(list)
    for (variant, interval), pts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        fail = mean_ci([failed_share(p) for p in pts])
        hit = mean_ci([refused_share(p) for p in pts])
        msgs = mean_ci([sync_counter(p, "messages_sent") / duration(p) for p in pts])
        byts = mean_ci([sync_counter(p, "bytes_sent") / duration(p) for p in pts])
        label = variant if interval is None else f"{variant}, every {interval:g} s"
        rows.append([label, len(pts), fmt(*hit), fmt(*fail), fmt(*msgs),
                     fmt(byts[0] and byts[0] / 1e3, byts[1] and byts[1] / 1e3)])
        series[variant].append((interval, hit, msgs, byts, fail))
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
            for variant, pts in series.items():
                if pts[0][0] is None:  # not periodic: a band across the intervals
                    (_, hit, _, byts, _), = pts
                    for ax, (m, h), scale in ((axes[0], hit, 1), (axes[1], byts, 1e-3)):
                        line = ax.axhline(m * scale, ls="--", lw=1, label=variant,
                                          color="C2" if variant == "ondemand" else "C3")
                        if h is not None:
                            ax.axhspan((m - h) * scale, (m + h) * scale, alpha=0.15,
                                       color=line.get_color())
                    continue
                xs = [x for x, *_ in pts]
                for ax, key, scale in ((axes[0], 1, 1), (axes[1], 3, 1e-3)):
                    ax.errorbar(xs, [pt[key][0] * scale for pt in pts],
                                yerr=[half_or_zero(pt[key][1]) * scale for pt in pts], marker="o",
                                capsize=3, label=f"periodic, {variant}")
                axes[0].errorbar(xs, [pt[4][0] for pt in pts],
                                 yerr=[half_or_zero(pt[4][1]) for pt in pts],
                                 marker="x", ls=":", capsize=3,
                                 label=f"periodic, {variant}: session failed")
            axes[0].set(xscale="log", xlabel="sync interval (s)", ylim=(-0.05, 1.05),
                        ylabel="share of FTP sessions",
                        title="Data connections refused (solid) / sessions failed (dotted)")
            axes[1].set(xscale="log", yscale="log", xlabel="sync interval (s)",
                        ylabel="sync traffic, all nodes (kB/s)", title="Sync traffic")
            for ax in axes:
                ax.legend(fontsize=7)
            fig.suptitle("Experiment 1: the periodic window (mean, 95% CI over repetitions)",
                         fontsize=9)
            figures = save(fig, exp_dir)
    by = {(v, i): g for (v, i), g in groups.items()}
    verdict, why = "not shown", "the on-demand and periodic variants are not all present"
    periodic = sorted({i for (v, i) in by if v in ("full", "differential") and i is not None})
    if ("ondemand", None) in by and periodic:
        def share(f, variants, interval):
            return mean_ci([f(p) for v in variants for p in by.get((v, interval), [])])
        od = share(refused_share, ["ondemand"], None)
        longest = share(refused_share, ["full", "differential"], periodic[-1])
        shortest = share(refused_share, ["full", "differential"], periodic[0])
        failed = {i: share(failed_share, ["full", "differential"], i) for i in periodic}
        od_top = od[0] + half_or_zero(od[1])
        # Every interval here is far longer than the few ms between the reply and the data
        # SYN, so the window catches the first SYN alike at any interval; what grows with
        # the interval is how many sessions fail, for a sync round must come before the
        # client's TCP gives up resending the SYN.
        grows = failed[periodic[-1]][0] > failed[periodic[0]][0] + half_or_zero(failed[periodic[0]][1])
        if od_top <= 0.05 and min(longest[0], shortest[0]) > od_top and grows:
            verdict = "holds"
        else:
            verdict = "does not hold"
        why = (f"data connections refused: on-demand {fmt(*od)}; periodic every "
               f"{periodic[0]:g} s {fmt(*shortest)}, every {periodic[-1]:g} s {fmt(*longest)}. "
               "Sessions failed (the client's TCP sends the SYN again after 1 s, and gives up "
               "after the spec's timeout): " + ", ".join(f"every {i:g} s {fmt(*failed[i])}"
                                                          for i in periodic))
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "points", "data connection refused (share of sessions)",
                       "sessions failed", "sync data messages/s",
                       "sync kB/s (incl. acks, heartbeats)"], rows)}
