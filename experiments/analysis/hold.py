"""Experiment 2: holding the announcing packet (method 800) closes the race of on-demand sync."""
from __future__ import annotations

from experiments.analysis.points import failed_share, group, refused_share
from experiments.analysis.stats import fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save
from nodes.samples import percentiles


def hold(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points)
    rows, delays, hits, pct = [], {}, {}, {}
    for (variant,), pts in sorted(groups.items()):
        fail = mean_ci([failed_share(p) for p in pts])
        hits[variant] = mean_ci([refused_share(p) for p in pts])
        held = [x for p in pts for node in p["raw"].values() for x in node.get("hold_ms", [])]
        delays[variant] = sorted(held)
        pct[variant] = percentiles([x / 1000 for x in held])  # ms in, seconds expected
        rows.append([variant, len(pts), fmt(*hits[variant]), fmt(*fail), len(held),
                     f"{pct[variant]['p50']:.3g} / {pct[variant]['p99']:.3g}" if held else "n/a"])
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
            names = sorted(groups)
            for i, (variant,) in enumerate(names):
                m, h = hits[variant]
                axes[0].bar(i, m, yerr=half_or_zero(h), capsize=4,
                            color="C2" if variant.startswith("hold") else "C3",
                            label=f"{variant} (n={len(groups[(variant,)])})")
            axes[0].set_xticks(range(len(names)), [n for n, in names])
            axes[0].set(ylabel="share of FTP sessions", ylim=(0, 1.05),
                        title="Data connection refused at least once")
            axes[0].legend(fontsize=7)
            for variant, xs in delays.items():
                if xs:
                    axes[1].plot(xs, [(k + 1) / len(xs) for k in range(len(xs))],
                                 label=f"{variant}: {len(xs)} held packets")
            axes[1].set(xscale="log", xlabel="delay added to the held packet (ms)",
                        ylabel="share of held packets (CDF)", title="Cost of the hold")
            axes[1].legend(fontsize=7)
            fig.suptitle("Experiment 2: holding the packet (mean, 95% CI over repetitions)",
                         fontsize=9)
            figures = save(fig, exp_dir)
    pairs = [(v, "no" + v) for v, in groups if v.startswith("hold") and ("no" + v,) in groups]
    verdict, why = "not shown", "needs variants with and without the hold"
    if pairs:
        parts, shown, broken = [], False, False
        for with_, without in pairs:
            h, n = hits[with_], hits[without]
            top = h[0] + half_or_zero(h[1])
            broken |= top > 0.05
            shown |= n[0] > top
            p99 = f"{pct[with_]['p99']:.3g} ms" if pct[with_] else "n/a"
            parts.append(f"{with_}: data connections refused {fmt(*h)}, without the hold "
                         f"{fmt(*n)}; hold p99 {p99}")
        why = "; ".join(parts)
        if broken:
            verdict = "does not hold"
        elif shown:
            verdict = "holds"
        else:
            why += " (without the hold no race was lost: nothing to prevent)"
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "points", "data connection refused (share of sessions)",
                       "sessions failed", "held packets", "hold delay p50 / p99 (ms)"], rows)}
