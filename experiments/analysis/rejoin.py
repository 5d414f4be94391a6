"""Experiment 5: a node leaving or crashing and joining again under load (method 700)."""
from __future__ import annotations

import functools
import os
import statistics
from collections import defaultdict

from experiments.analysis.attribution import read_jsonl
from experiments.analysis.failover import first_fault
from experiments.analysis.points import failed_share, group
from experiments.analysis.stats import fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save


DETECTION_GRACE = 0.3  # s after a membership change before a node must be backed up again
# The nodes answer a snapshot one after the other: a connection opened between two
# answers, or a moment before, can be on its way to the backup. Only connections older
# than nodes.sync.SETTLED (50 ms) are counted, and coverage must stay above this.
MIN_COVERAGE = 0.9


@functools.lru_cache(maxsize=1024)
def events_of(path: str, kind: str) -> tuple[dict, ...]:
    """The events of one kind in a JSON-lines log, read once (the stability bootstrap
    decides the verdict again a thousand times on the same points)."""
    return tuple(e for e in read_jsonl(path) if e["event"] == kind)


def coverage(snapshot: dict) -> tuple[float | None, list[str]]:
    """Share of the live nodes' connections with a copy on one of the owner's live backup
    nodes, and the nodes that own connections but have no such copy at all."""
    nodes = {n: s["sync"] for n, s in snapshot["nodes"].items() if s and "sync" in s}
    owned = copied = 0
    bare = []
    for name, st in nodes.items():
        # Connections opened in the last moment may still be on their way to the backup.
        mine = st.get("entries_owned_settled", st.get("entries_owned", 0))
        if not mine or len(nodes) < 2:
            continue
        copies = max((nodes[b].get("backup_of", {}).get(name, 0)
                      for b in st.get("backup_nodes", []) if b in nodes), default=0)
        owned += mine
        copied += min(mine, copies)
        if not copies:
            bare.append(name)
    return (copied / owned if owned else None), bare


def rejoin(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    groups = group(points)
    rows, timings, curves = [], {}, {}
    worst, unbacked, went = {}, {}, defaultdict(list)
    for (variant,), pts in sorted(groups.items()):
        ready, steered, carrying, ok = [], [], [], []
        worst[variant], unbacked[variant] = 1.0, 0
        curve = defaultdict(list)
        for p in pts:
            back = first_fault(p, "restart")
            gone = first_fault(p, "crash") or first_fault(p, "leave")
            if back is None:
                continue
            t0, node = back
            ev = [e for e in events_of(os.path.join(p["dir"], f"{node}.events.jsonl"), "ready")
                  if e["t"] > t0]
            ready.append((ev[0]["t"] - t0) * 1000 if ev else None)
            up = [e for e in events_of(os.path.join(p["dir"], "controller.events.jsonl"), "node_up")
                  if e.get("node") == node and e["t"] > t0]
            steered.append((up[0]["t"] - t0) * 1000 if up else None)
            first = [s["t"] for s in p["snapshots"] if s["t"] > t0 and (s["nodes"].get(node) or {})
                     and sum(s["nodes"][node].get("packets_in", {}).values()) > 0]
            carrying.append((first[0] - t0) * 1000 if first else None)
            ok.append(1 - failed_share(p))
            changes = [t for t in (gone and gone[0], t0, up and up[0]["t"]) if t]
            if gone:
                went[variant].append(gone[0] - t0)
            for snap in p["snapshots"]:
                share, bare = coverage(snap)
                if share is None:
                    continue
                curve[round(snap["t"] - t0, 1)].append(share)
                if all(abs(snap["t"] - t) > DETECTION_GRACE for t in changes):
                    worst[variant] = min(worst[variant], share)
                    unbacked[variant] += bool(bare)
        timings[variant] = [mean_ci(ready), mean_ci(steered), mean_ci(carrying)]
        curves[variant] = sorted((t, statistics.fmean(v)) for t, v in curve.items())
        rows.append([variant, len(pts), *(fmt(*x) for x in timings[variant]), fmt(*mean_ci(ok)),
                     f"{worst[variant]:.3f}", unbacked[variant]])
    names = [v for v, in sorted(groups)]
    figures: list[str] = []  # none when only the verdict is asked for (stability)
    if draw:
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.2))
            labels = ("has its state (ready)", "steered to again", "carries packets")
            for j, label in enumerate(labels):
                xs = [i + (j - 1) * 0.27 for i in range(len(names))]
                axes[0].bar(xs, [timings[v][j][0] or 0 for v in names], width=0.27,
                            yerr=[half_or_zero(timings[v][j][1]) for v in names], capsize=3,
                            label=label)
            axes[0].set_xticks(range(len(names)), [f"{v}, then restart" for v in names])
            axes[0].set(ylabel="time after the restart (ms)", title="Back in service")
            axes[0].legend(fontsize=7)
            for i, v in enumerate(names):
                axes[1].plot([t for t, _ in curves[v]], [c for _, c in curves[v]], marker=".",
                             color=f"C{i}", label=v)
                if went[v]:
                    axes[1].axvline(statistics.fmean(went[v]), color=f"C{i}", lw=0.8, ls="--")
            axes[1].axvline(0, color="black", lw=0.8, ls=":")
            axes[1].set(xlabel="time from the restart (s; dashed: fw2 went)", ylim=(-0.05, 1.05),
                        ylabel="connections with a copy on a live backup",
                        title="Backup coverage (every 0.1 s, mean of repetitions)")
            axes[1].legend(fontsize=7)
            fig.suptitle("Experiment 5: fw2 goes away and restarts under load "
                         "(mean, 95% CI over repetitions)", fontsize=9)
            figures = save(fig, exp_dir)
    measured = [v for v in names if timings[v][0][0] is not None]
    verdict, why = "not shown", "no restarted node reported ready"
    if measured:
        back = all(timings[v][0][0] is not None and timings[v][2][0] is not None for v in names)
        covered = all(worst[v] >= MIN_COVERAGE and not unbacked[v] for v in names)
        verdict = "holds" if back and covered else "does not hold"
        why = "; ".join(
            f"{v}: ready {fmt(*timings[v][0], unit='ms')}, steered to "
            f"{fmt(*timings[v][1], unit='ms')}, carrying packets {fmt(*timings[v][2], unit='ms')} "
            f"after the restart; lowest backup coverage {worst[v]:.3f}, snapshots with a node "
            f"without a backup copy {unbacked[v]}" for v in names)
        why += (f" (snapshots every 0.1 s; those within {DETECTION_GRACE} s of a failure, a "
                "restart or a return of flows are left out: detection and regrouping take that "
                f"long; the claim holds if no node is without a copy and coverage stays >= "
                f"{MIN_COVERAGE}; connections younger than 50 ms, possibly still on their way to "
                "the backup, are not counted)")
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "points", "ready after restart (ms)", "steered to (ms)",
                       "carries packets (ms, 0.1 s snapshots)", "sessions ok",
                       "lowest backup coverage", "snapshots with a node unbacked"], rows)}
