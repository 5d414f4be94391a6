"""Experiment 6: forwarding to the home node (the second seed) against on-demand sync."""
from __future__ import annotations

from experiments.analysis.delayed import sync_bytes
from experiments.analysis.failover import affected_sessions
from experiments.analysis.points import group, sync_counter
from experiments.analysis.stats import (bootstrap_difference, compare_intervals, fmt,
                                        half_or_zero, mean_ci)
from experiments.analysis.style import STYLE, plt, save
from nodes import syncproto as sp
from nodes.samples import percentiles


def cluster_bytes(p: dict) -> float:
    """Bytes on the cluster network for state (sync) or for forwarding (home), with their
    headers; heartbeats, which both pay, are left out. Kernel nodes count conntrackd's
    multicast datagrams whole: its keep-alives (FT-FW's ALIVE) cannot be told apart."""
    if any(isinstance(s, dict) and s.get("kind") == "kernel" for s in p["stats"].values()):
        return sync_counter(p, "bytes_sent") + sp.WIRE_HEADERS * sync_counter(p, "messages_sent")
    messages = sum(sync_counter(p, name) for name in ("messages_sent", "acks_sent",
                                                      "retransmissions"))
    messages += sync_counter(p, "cluster_messages_sent", "home")
    return (sync_bytes(p) + sync_counter(p, "cluster_bytes_sent", "home")
            + sp.WIRE_HEADERS * messages)


# bootstrap resamples of the latency difference: the verdict itself, and each of the
# stability's resamples (thousands of them: a coarser interval each, so that the report
# stays within a minute or two; experiments/analysis/stability.py)
INNER, INNER_STABILITY = 2000, 100


def colour(variant: str) -> str:
    """home red, the testbed's sync blue, kernel nodes' (conntrackd) green."""
    return {"home": "C3", "sync": "C0"}.get(variant, "C2")


def home_vs_sync(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points, "cluster.latency_ms")
    rows, res = [], {}
    for (variant, lat), pts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        lat = lat if lat is not None else pts[0]["spec"]["cluster"]["latency_ms"]
        setup = [r["data_setup"] * 1000 for p in pts for r in p["records"]
                 if r.get("data_setup") is not None]
        pct = percentiles([x / 1000 for x in setup])
        per_byte = mean_ci([cluster_bytes(p) / max(1, sum(r.get("bytes") or 0
                                                           for r in p["records"])) for p in pts])
        shares = []
        for p in pts:
            aff = affected_sessions(p)
            if aff:
                shares.append(sum(r["outcome"] == "ok" for r in aff) / len(aff))
        surv = mean_ci(shares)
        by_rep = {p["repetition"]: [r["data_setup"] * 1000 for r in p["records"]
                                    if r.get("data_setup") is not None] for p in pts}
        res[variant, lat] = {"setup": sorted(setup), "pct": pct, "per_byte": per_byte,
                             "survival": surv, "by_rep": by_rep}
        rows.append([variant, f"{lat:g}", len(pts),
                     f"{pct['p50']:.3g} / {pct['p99']:.3g}" if setup else "n/a",
                     fmt(*per_byte), fmt(*surv)])
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
            keys = sorted(res, key=lambda k: (k[1], k[0]))
            for i, key in enumerate(keys):
                xs = res[key]["setup"]
                if xs:
                    axes[0].plot(xs, [(j + 1) / len(xs) for j in range(len(xs))],
                                 color=colour(key[0]),
                                 ls="-" if key[1] == 0 else "--", label=f"{key[0]}, {key[1]:g} ms")
                m, h = res[key]["per_byte"]
                axes[1].bar(i, m or 0, yerr=half_or_zero(h), capsize=3, color=colour(key[0]))
                m, h = res[key]["survival"]
                axes[2].bar(i, m or 0, yerr=half_or_zero(h), capsize=3, color=colour(key[0]))
            ticks = [f"{v}\n{lat:g} ms" for v, lat in keys]
            axes[0].set(xlabel="data connection set-up (ms)",
                        ylabel="share of sessions (CDF)", title="Latency of the related connection")
            axes[0].legend(fontsize=7)
            axes[1].set_xticks(range(len(keys)), ticks)
            axes[1].set(ylabel="cluster bytes per byte downloaded",
                        title="Extra traffic on the cluster network")
            axes[2].set_xticks(range(len(keys)), ticks)
            axes[2].set(ylabel="share surviving", ylim=(0, 1.05),
                        title="Sessions on the crashed node")
            between = ", ".join(f"{x:g}" for x in sorted({lat for _, lat in res}))
            fig.suptitle(f"Experiment 6: home-node forwarding against state sync, {between} ms "
                         "between nodes (mean, 95% CI over repetitions)", fontsize=9)
            figures = save(fig, exp_dir)
    # every synchronizing variant ("sync", and "kernel_sync" on kernel nodes) against home
    pairs = sorted((v, lat) for v, lat in res if v.endswith("sync") and ("home", lat) in res)
    verdict, why = "not shown", "needs home and a sync variant at the same latency"
    if pairs:
        parts, failed, unshown = [], set(), set()
        for v, lat in pairs:
            s_, h_ = res[v, lat], res["home", lat]
            tag = "" if v == "sync" else f" ({v})"
            if not (s_["pct"] and h_["pct"] and s_["survival"][0] is not None
                    and h_["survival"][0] is not None):
                continue
            # cluster traffic: home's interval above sync's (means, Student's t)
            traffic = compare_intervals(h_["per_byte"], s_["per_byte"])
            if traffic != "holds":
                (failed if traffic == "does not hold" else unshown).add("cluster traffic" + tag)
            # latency: home's median set-up minus sync's, a bootstrap interval over the
            # repetitions and their sessions, must be above 0 (home adds a query and a hop)
            reps = sorted(set(h_["by_rep"]) & set(s_["by_rep"]))
            diff = bootstrap_difference([h_["by_rep"][r] for r in reps],
                                        [s_["by_rep"][r] for r in reps],
                                        resamples=INNER if draw else INNER_STABILITY)
            latency = ("not shown" if diff is None or diff[1] <= 0 <= diff[2] else
                       "holds" if diff[1] > 0 else "does not hold")
            if latency != "holds":
                (failed if latency == "does not hold" else unshown).add(
                    f"latency at {lat:g} ms{tag}")
            if not h_["survival"][0] <= 0.2 <= 0.8 <= s_["survival"][0]:
                failed.add("survival" + tag)
            gap = (f"home minus {v} {diff[0]:.3g} ms [{diff[1]:.3g}, {diff[2]:.3g}]"
                   if diff else "n/a")
            parts.append(
                f"{lat:g} ms apart: cluster bytes per byte downloaded home {fmt(*h_['per_byte'])} "
                f"vs {v} {fmt(*s_['per_byte'])}; data connection set-up p50 home "
                f"{h_['pct']['p50']:.3g} ms vs {v} {s_['pct']['p50']:.3g} ms ({gap}, "
                f"95% bootstrap interval); survival home "
                f"{fmt(*h_['survival'])} vs {v} {fmt(*s_['survival'])}")
        if parts:
            verdict = "does not hold" if failed else "holds"
            if unshown and not failed:
                verdict = "holds (in part)"
            why = "; ".join(parts) + (
                f". Not as claimed: {', '.join(sorted(failed))}" if failed else "") + (
                f". Not shown (the interval straddles the boundary): {', '.join(sorted(unshown))}"
                if unshown else "") + (
                ". Decision rule: home's cluster bytes per byte above sync's (95% intervals "
                "apart), home's median data connection set-up above sync's (bootstrap interval "
                "of the difference above 0; sync's hold keeps the announcing reply for one "
                "sync round trip, home's query delays the data connection's first packet by "
                "one), survival home <= 0.2 and sync >= 0.8 (means)")
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "ms between nodes", "points",
                       "data connection set-up p50 / p99 (ms)", "cluster bytes per byte downloaded",
                       "crashed node's sessions surviving"], rows)}
