"""The reproduction report: every experiment's analysis, its verdict and REPORT.md."""
from __future__ import annotations

import glob
import json
import os
import statistics

from experiments.analysis.auto_switching import auto_switching
from experiments.analysis.combined_interval import combined_interval
from experiments.analysis.delayed import delayed
from experiments.analysis.failover import failover
from experiments.analysis.hold import hold
from experiments.analysis.home_vs_sync import home_vs_sync
from experiments.analysis.periodic_window import periodic_window
from experiments.analysis.rejoin import rejoin
from experiments.analysis.scaling import scaling
from experiments.analysis.window import window
from experiments.analysis.points import group, load_points, read_json
from experiments.analysis import stability as stab

# A spec's ``analysis`` names one of these (experiments/specs/reproduce/*.toml).
ANALYSES = {"periodic_window": periodic_window, "hold": hold, "failover": failover,
            "scaling": scaling, "rejoin": rejoin, "home_vs_sync": home_vs_sync,
            "delayed": delayed, "window": window, "combined_interval": combined_interval,
            "auto_switching": auto_switching}


def fidelity_summary(points: list[dict]) -> str:
    flagged = [p for p in points if p.get("fidelity", {}).get("emulator_bottleneck")]
    idle = [p["fidelity"]["idle_cpu"] for p in points if p.get("fidelity", {}).get("idle_cpu")]
    text = (f"{len(flagged)} of {len(points)} points flagged"
            + (f"; idle CPU while traffic ran: min {min(idle):.0%}, median "
               f"{statistics.median(idle):.0%}" if idle else ""))
    reasons = sorted({f for p in flagged for f in p["fidelity"]["flags"]})
    if reasons:
        text += "; reasons: " + "; ".join(reasons[:5]) + (" ..." if len(reasons) > 5 else "")
    return text


def judge_stability(analysis, points: list[dict], exp_dir: str, verdict: str) -> dict:
    """The verdict's stability over bootstrap resamples of its repetitions and, when
    it is unstable, how many repetitions would settle it."""
    value = stab.stability(analysis, points, exp_dir, verdict)
    unstable = value is not None and value < stab.STABLE
    needed = stab.repetitions_needed(analysis, points, exp_dir) if unstable else None
    return {"stability": value, "unstable": unstable,
            "repetitions_needed": needed and needed[0], "settles_at": needed and needed[1],
            "repetitions": len(stab.repetitions(points))}


def report(folder: str) -> tuple[str, list[str]]:
    """Analyse every experiment of a campaign folder; write REPORT.md; return it and figures."""
    manifests = [read_json(p) for p in sorted(glob.glob(os.path.join(folder, "manifests", "*.json")))]
    sections, figures = [], []
    summary, verdicts = [], {}
    for exp_dir in sorted(d for d in glob.glob(os.path.join(folder, "*")) if os.path.isdir(d)
                          and os.path.exists(os.path.join(d, "spec.resolved.json"))):
        spec = read_json(os.path.join(exp_dir, "spec.resolved.json"))
        points = load_points(exp_dir)
        name = spec["name"]
        analysis = ANALYSES.get(spec.get("analysis", ""))
        if analysis is None or not points:
            summary.append(f"| {name} | not shown | {'no analysis' if points else 'no points'} |")
            continue
        result = analysis(points, exp_dir)
        figures += result["figures"]
        judged = judge_stability(analysis, points, exp_dir, result["verdict"])
        verdict = result["verdict"]
        if judged["stability"] is None:
            verdict += " (indicative only)"
        elif judged["unstable"]:
            verdict += " (unstable)"
        settled = stab.describe(judged["stability"],
                                judged["repetitions_needed"] and
                                (judged["repetitions_needed"], judged["settles_at"]),
                                judged["repetitions"], judged["unstable"])
        verdicts[name] = {"claim": " ".join(spec.get("claim", "").split()),
                          "verdict": result["verdict"], "why": result["why"], **judged}
        header, rows = result["table"]
        table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        table += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        png = os.path.relpath(result["figures"][0], folder)
        reps = spec.get("repetitions")
        sections.append("\n".join([
            f"## {name}", "", f"**Claim.** {' '.join(spec.get('claim', '').split())}", "",
            f"**Verdict: {verdict}.** {settled}. {result['why']}.", "",
            *table, "", f"![{name}]({png})", "",
            f"{len(points)} points, {reps} seeded repetition(s) per configuration "
            f"(seeds {spec['seed']}000 + repetition). Emulation fidelity: "
            f"{fidelity_summary(points)}.", ""]))
        summary.append(f"| {name} | **{verdict}** ({settled}) | {result['why']} |")
    m = manifests[-1] if manifests else {}
    head = [
        "# Reproduction report", "",
        "Written by `fwcluster figures` from the raw data in this folder alone. "
        "Numbers are means with the half-width of their 95% confidence interval "
        "(Student's t) over the seeded repetitions. Beside each verdict, its stability: "
        f"the share of {stab.RESAMPLES} bootstrap resamples of the repetitions (seeded) "
        f"that give the same verdict; under {stab.STABLE} the verdict is *unstable*, with "
        "the repetitions that would settle it were the spread the one observed. "
        "REPORT.json holds the same, for scripts.", "",
        f"- commit {m.get('commit', '?')}{' (uncommitted changes)' if m.get('dirty') else ''}; "
        f"quick form: {m.get('quick')}; shards: "
        f"{', '.join(x.get('shard', '?') + ' on ' + str(x.get('host')) for x in manifests)}",
        f"- kernel {m.get('kernel')}, {m.get('cpus')} CPUs, datapath {m.get('datapath')}, "
        f"{m.get('openvswitch')}, Mininet {m.get('mininet')}, Python {m.get('python')}",
        f"- packages: {', '.join(f'{k} {v}' for k, v in (m.get('packages') or {}).items())}", "",
        "| experiment | verdict | numbers |", "|---|---|---|", *summary, ""]
    text = "\n".join(head + sections)
    with open(os.path.join(folder, "REPORT.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    with open(os.path.join(folder, "REPORT.json"), "w", encoding="utf-8") as fh:
        json.dump({"resamples": stab.RESAMPLES, "stable": stab.STABLE,
                   "experiments": verdicts}, fh, indent=2)
    return os.path.join(folder, "REPORT.md"), figures
