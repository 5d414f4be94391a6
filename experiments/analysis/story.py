"""The demo's story (experiments/specs/demo.toml) from one run's raw data: a summary
figure and SUMMARY.md, which says in plain words what happened, with the numbers.

Its three variants, in the order their labels sort: the problem (no sync), the
seed's answer (on-demand sync with the hold), and a node crash under load survived
with backup sync. A session "refused" is one whose data connection went to another
node than its control connection and failed there for want of state."""
from __future__ import annotations

import os

from experiments.analysis.failover import affected_sessions, first_fault, goodput
from experiments.analysis.points import load_points
from experiments.analysis.style import STYLE, plt, save
from experiments.plot import COLORS, category

SYNC_WORDS = {"ondemand": "on demand", "periodic": "periodically",
              "combined": "on demand and periodically"}
LABELS = {"ok": "succeeded", "other_node": "data connection refused on another node",
          "failed": "failed otherwise"}


def summarize(p: dict) -> dict:
    """Counts of one point's sessions by outcome (sessions never recorded: failed)."""
    planned = p["spec"].get("traffic", {}).get("sessions") or len(p["records"])
    counts = {k: sum(category(r) == k for r in p["records"]) for k in COLORS}
    counts["failed"] += max(0, planned - len(p["records"]))
    out = {"variant": p["variant"], "nodes": p["spec"]["topology"]["nodes"],
           "sessions": planned, "sync": p["spec"]["cluster"]["sync"], **counts}
    crash = first_fault(p, "crash")
    if crash:
        hit = affected_sessions(p)
        survivors = [r for r in hit if r["outcome"] == "ok"]
        out["crash"] = {"node": crash[1],
                        "hit": len(hit), "survived": len(survivors),
                        "stall_ms": max((r.get("max_gap") or 0.0 for r in survivors),
                                        default=None)}
        out["goodput"] = sorted(goodput(p, crash[0]).items())
        if out["crash"]["stall_ms"] is not None:
            out["crash"]["stall_ms"] *= 1000
    return out


def story(run_dir: str) -> list[str]:
    """summary.png (and .pdf) and SUMMARY.md of a demo run; the paths written."""
    parts = [summarize(p) for p in sorted(load_points(run_dir), key=lambda p: p["variant"])]
    if not parts:
        raise ValueError(f"{run_dir} holds no finished point")
    paths = figure(parts, run_dir)
    path = os.path.join(run_dir, "SUMMARY.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text(parts))
    return paths + [path]


def figure(parts: list[dict], run_dir: str) -> list[str]:
    crashed = [s for s in parts if "crash" in s]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 1 + bool(crashed), figsize=(4.6 + 4.4 * bool(crashed), 3.4),
                                 squeeze=False)
        ax = axes[0][0]
        for i, s in enumerate(parts):
            left = 0
            for k, color in COLORS.items():
                ax.barh(i, s[k], left=left, color=color, label=LABELS[k] if i == 0 else None)
                if s[k]:
                    ax.text(left + s[k] / 2, i, str(s[k]), ha="center", va="center",
                            fontsize=8, color="white")
                left += s[k]
        ax.set_yticks(range(len(parts)), [s["variant"].replace("_", " ") for s in parts])
        ax.invert_yaxis()
        ax.set(xlabel="FTP sessions", title=f"{parts[0]['nodes']} firewall nodes")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        if crashed:
            s, ax = crashed[0], axes[0][1]
            xs = [x for x, _ in s["goodput"]]
            ax.plot(xs, [y for _, y in s["goodput"]], color="C0", lw=1)
            ax.axvline(0, color="black", lw=0.8, ls=":")
            c = s["crash"]
            ax.text(0.35, 0.95, f"{c['node']} killed: {c['survived']} of {c['hit']} sessions\n"
                    "on it finish through its backup", transform=ax.transAxes, va="top",
                    fontsize=8)
            ax.set(xlabel=f"time from the crash of {c['node']} (s)",
                   ylabel="goodput, all sessions (Mbit/s)",
                   title=s["variant"].replace("_", " "))
        return save(fig, run_dir, "summary")


def _share(k: int, n: int) -> str:
    return f"{k} of {n} ({100 * k / n:.0f}%)" if n else "none"


def text(parts: list[dict]) -> str:
    lines = ["# What this run showed", ""]
    for s in parts:
        n, name = s["sessions"], s["variant"].replace("_", " ")
        lines.append(f"## {name}")
        lines.append("")
        if s["sync"] == "none":
            lines.append(
                f"{s['nodes']} nodes that share no state. {_share(s['ok'], n)} FTP sessions "
                f"succeeded; in {_share(s['other_node'], n)} the data connection went to another "
                "node than its control connection, which had never seen the PORT or PASV "
                f"that announced it, and refused it. The seed predicts that about "
                f"1 in {s['nodes']} succeeds (the data connection lands on the control "
                "connection's node by chance).")
        else:
            lines.append(
                f"{s['nodes']} nodes that synchronize {SYNC_WORDS.get(s['sync'], s['sync'])}: a node that sees a data "
                "connection announced sends that state to the other nodes and holds the "
                f"announcing packet until they have it. {_share(s['ok'], n)} sessions "
                f"succeeded; {s['other_node']} had its data connection refused, "
                f"{s['failed']} failed otherwise.")
        if "crash" in s:
            c = s["crash"]
            stall = "" if c["stall_ms"] is None else (
                f" The longest pause a surviving download saw was {c['stall_ms']:.0f} ms.")
            lines.append("")
            lines.append(
                f"{c['node']} was killed (SIGKILL) while downloads ran through it: "
                f"{c['hit']} sessions had a connection on it. Its backup node held copies of "
                f"its connections, took them over, and the switches sent their packets there: "
                f"{c['survived']} of {c['hit']} finished.{stall}")
        lines.append("")
    lines += ["The figure: figures/summary.png. The raw data: sessions.csv and points/*/; "
              "how it was run: spec.toml, manifest.json. To watch state move between the "
              "nodes yourself and kill one: `make cli` (docs/labs/).", ""]
    return "\n".join(lines)
