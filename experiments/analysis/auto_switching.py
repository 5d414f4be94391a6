"""Experiment 9: mode auto switches by bandwidth and by memory, and back (method 500)."""
from __future__ import annotations

from experiments.analysis.attribution import node_events
from experiments.analysis.delayed import sync_bytes
from experiments.analysis.points import failed_share, refused_share
from experiments.analysis.stats import combine, compare_intervals, fmt, half_or_zero, mean_ci
from experiments.analysis.style import STYLE, plt, save

# What a node of mode auto does over the ramp, in order: the two budgets, each crossed
# up and then down (the hysteresis: back only below half the budget)
EXPECTED = (("active", "periodic"), ("active", "ondemand"),
            ("replication", "backup"), ("replication", "full"))
PEAK = 0.5  # snapshots where the cluster holds at least this share of its most connections


def traffic_start(p: dict) -> float:
    return next((e["t"] for e in p["events"] if e.get("event") == "ftp_clients_start"),
                p["t_traffic_start"])


def switches(p: dict) -> list[dict]:
    """The point's sync_switch events, times from the traffic's start (read once a point)."""
    if "_switches" not in p:
        t0 = traffic_start(p)
        p["_switches"] = [{"t": e["t"] - t0, "node": e["node"],
                           "what": "active" if "active" in e else "replication",
                           "value": e.get("active", e.get("replication")),
                           "why": e.get("rate", e.get("entries"))}
                          for e in node_events(p["dir"]) if e.get("event") == "sync_switch"]
        p["_switches"].sort(key=lambda s: s["t"])
    return p["_switches"]


def switched_as_expected(p: dict) -> bool:
    """Every node switched to periodic and back, and to backup replication and back,
    each once and in that order (no flapping)."""
    nodes = [n for n, s in p["stats"].items() if isinstance(s, dict) and "sync" in s]
    for node in nodes:
        mine = [(s["what"], s["value"]) for s in switches(p) if s["node"] == node]
        for what in ("active", "replication"):
            if [x for x in mine if x[0] == what] != [x for x in EXPECTED if x[0] == what]:
                return False
    return bool(nodes)


def offered(p: dict, t: float, window: float = 1.0) -> float:
    """Sessions a second that started in the ``window`` seconds before ``t``."""
    t0 = traffic_start(p)
    return sum(1 for r in p["records"] if t - window <= r["t_start"] - t0 < t) / window


def held_share(p: dict) -> float | None:
    """Entries a node holds per connection of the cluster, around the peak of the load:
    1 with full replication, (1 + k) / n with k backups (a node's own and its copies)."""
    points = []
    for snap in p["snapshots"]:
        nodes = [v for v in snap["nodes"].values() if v]
        total = sum(v.get("sync", {}).get("entries_owned", 0) for v in nodes)
        if nodes and total:
            points.append((total, sum(v["entries"] for v in nodes) / len(nodes) / total))
    if not points:
        return None
    most = max(total for total, _ in points)
    shares = [share for total, share in points if total >= PEAK * most]
    return sum(shares) / len(shares)


def crossed(p: dict, value, budget: float, window: float = 1.0) -> float | None:
    """When (seconds from the traffic's start) a node of the point first went past
    ``budget`` in its snapshots: ``value(stats)`` a level (entries), or with a
    ``window`` the rate of a counter over the last ``window`` seconds."""
    t0, series = traffic_start(p), {}
    for snap in p["snapshots"]:
        for node, stats in snap["nodes"].items():
            if stats:
                series.setdefault(node, []).append((snap["t"] - t0, value(stats)))
    first = None
    for samples in series.values():
        for i, (t, v) in enumerate(samples):
            if window:
                back = [(t1, v1) for t1, v1 in samples[:i] if t1 <= t - window]
                if not back:
                    continue
                t1, v1 = back[-1]
                level = (v - v1) / (t - t1)
            else:
                level = v
            if level > budget:
                first = t if first is None else min(first, t)
                break
    return first


def switch_lags(auto: list, od: list) -> dict:
    """How the switches followed the load, per repetition. ``bandwidth``: seconds from
    the moment the on-demand twin (the same seeded load) first sent more DATA bytes a
    second, over 1 s, than the bandwidth budget to auto's first switch to periodic
    (auto's own projection is not observable from outside). ``entries``: a node's
    table size when it switched to backups, over the entry budget (a node that has
    switched drops its copies at once, so its snapshots cannot date the crossing)."""
    twins = {p["repetition"]: p for p in od}
    out = {"bandwidth": [], "entries": []}
    for p in auto:
        cl = p["spec"].get("cluster", {})
        twin, budget = twins.get(p["repetition"]), cl.get("budget_bandwidth")
        at = crossed(twin, lambda s: s.get("sync", {}).get("counters", {}).get(
            "data_bytes_sent", 0), budget, 1.0) if twin is not None and budget else None
        switched = next((s["t"] for s in switches(p) if (s["what"], s["value"]) ==
                         ("active", "periodic")), None)
        if at is not None and switched is not None:
            out["bandwidth"].append(switched - at)
        if cl.get("budget_entries"):
            out["entries"] += [s["why"] / cl["budget_entries"] for s in switches(p)
                               if (s["what"], s["value"]) == ("replication", "backup")
                               and s["why"] is not None]
    return out


def auto_switching(points: list[dict], exp_dir: str, draw: bool = True) -> dict:
    by = {}
    for p in points:
        by.setdefault(p["variant"], []).append(p)
    auto, od = by.get("auto", []), by.get("ondemand", [])
    cis, rows = {}, []
    for label, pts in (("auto", auto), ("ondemand", od)):
        ups = [offered(p, s["t"]) for p in pts for s in switches(p)
               if (s["what"], s["value"]) == ("active", "periodic")]
        downs = [offered(p, s["t"]) for p in pts for s in switches(p)
                 if (s["what"], s["value"]) == ("active", "ondemand")]
        cis[label] = {"kb": mean_ci([sync_bytes(p) / 1e3 for p in pts]),
                      "held": mean_ci([held_share(p) for p in pts]),
                      "refused": mean_ci([refused_share(p) for p in pts]),
                      "failed": mean_ci([failed_share(p) for p in pts]),
                      "expected": mean_ci([float(switched_as_expected(p)) for p in pts]),
                      "up": mean_ci(ups), "down": mean_ci(downs)}
        c = cis[label]
        rows.append([label, len(pts), fmt(*c["expected"]), fmt(*c["up"]), fmt(*c["down"]),
                     fmt(*c["kb"]), fmt(*c["held"]), fmt(*c["refused"]), fmt(*c["failed"])])
    lags = switch_lags(auto, od)
    cis["lag"] = {part: mean_ci(values) for part, values in lags.items()}
    rows[0] += [fmt(*cis["lag"]["bandwidth"]), fmt(*cis["lag"]["entries"])]
    rows[1] += ["-", "-"]
    figures: list[str] = []
    if draw and auto:
        figures = _draw(auto, od, cis, exp_dir)
    verdict, why = _judge(auto, od, cis)
    return {"figures": figures, "verdict": verdict, "why": why,
            "table": (["variant", "points", "points whose every node switched up and back once",
                       "offered sessions/s at the switch to periodic",
                       "... at the switch back to on demand", "sync kB (data and acks)",
                       "entries a node holds per connection (around the peak)",
                       "data connections refused (share of sessions)", "sessions failed",
                       "s from the on-demand twin passing the bandwidth budget to the first "
                       "switch to periodic", "a node's entries at its switch to backups, over "
                       "the entry budget"],
                      rows)}


def _judge(auto: list, od: list, cis: dict) -> tuple[str, str]:
    """The switches, the bytes and the entries decide; the lags, the hysteresis and the
    cost are reported."""
    if not auto or not od:
        return "not shown", "the auto and on-demand variants are not both present"
    a, o = cis["auto"], cis["ondemand"]
    parts = {}
    share = a["expected"][0]
    parts["every node switches to periodic and back, and to backups and back, once each"] = (
        "holds" if share == 1 else "does not hold" if share == 0 else "not shown")
    parts["auto sends fewer sync bytes than on demand"] = compare_intervals(o["kb"], a["kb"])
    parts["a node of auto holds fewer entries per connection at the peak"] = (
        "not shown" if a["held"][0] is None or o["held"][0] is None
        else compare_intervals(o["held"], a["held"]))
    verdict = combine(parts.values())
    why = ("decision rule: the switches hold when every node of every auto point switched "
           "to periodic and back and to backup replication and back, once each (none: does "
           "not hold); bytes and entries per connection hold when the 95% intervals of "
           "on-demand and auto (over repetitions) do not overlap, on-demand's above. "
           + "; ".join(f"{k}: {v}" for k, v in parts.items())
           + f". Sync kB: auto {fmt(*a['kb'])}, on demand {fmt(*o['kb'])}; entries a node "
           f"holds per connection: auto {fmt(*a['held'])}, on demand {fmt(*o['held'])}. "
           f"Hysteresis: offered load at the switch to periodic {fmt(*a['up'])} sessions/s, "
           f"back to on demand {fmt(*a['down'])}; the first switch came "
           f"{fmt(*cis['lag']['bandwidth'])} s after the on-demand twin's DATA bytes a second "
           f"passed the bandwidth budget (a node judges its rate over 1 s); a node switched "
           f"to backups holding {fmt(*cis['lag']['entries'])} times the entry budget. The "
           f"cost: data connections refused auto "
           f"{fmt(*a['refused'])}, on demand {fmt(*o['refused'])} (share of sessions); "
           f"sessions failed auto {fmt(*a['failed'])}, on demand {fmt(*o['failed'])}")
    return verdict, why


def _series(p: dict, step: float = 0.5) -> tuple[list, list]:
    t0 = traffic_start(p)
    end = max((r["t_start"] - t0 for r in p["records"]), default=0.0) + step
    ts = [i * step for i in range(1, int(end / step) + 2)]
    return ts, [offered(p, t, step) for t in ts]


def _draw(auto: list, od: list, cis: dict, exp_dir: str) -> list[str]:
    first = min(auto, key=lambda p: p["repetition"])
    base = next((p for p in od if p["repetition"] == first["repetition"]), None)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        ts, rate = _series(first)
        axes[0].plot(ts, rate, color="0.4", label="sessions started")
        marks = {("active", "periodic"): ("C3", "to periodic"),
                 ("active", "ondemand"): ("C2", "back to on demand"),
                 ("replication", "backup"): ("C1", "to backups"),
                 ("replication", "full"): ("C0", "back to full")}
        seen = set()
        for s in switches(first):
            color, label = marks[(s["what"], s["value"])]
            axes[0].axvline(s["t"], color=color, lw=1, ls="--",
                            label=None if label in seen else label)
            seen.add(label)
        axes[0].set(xlabel="time since the traffic started (s)", ylabel="sessions/s",
                    title=f"Load ramp and switches (repetition {first['repetition']})")
        for p, label in ((first, "auto"), (base, "ondemand")):
            if p is None:
                continue
            t0 = traffic_start(p)
            xs = [s["t"] - t0 for s in p["snapshots"]]
            ys = [sum(v["entries"] for v in s["nodes"].values() if v) / max(1, sum(
                1 for v in s["nodes"].values() if v)) for s in p["snapshots"]]
            axes[1].plot(xs, ys, marker=".", label=label)
        axes[1].set(xlabel="time since the traffic started (s)", ylabel="entries",
                    title="Entries a node holds (mean of the nodes)")
        labels = ["sync kB", "entries per\nconnection", "refused"]
        for i, (variant, color) in enumerate((("auto", "C0"), ("ondemand", "C2"))):
            c = cis[variant]
            kb_scale = max(1e-9, cis["ondemand"]["kb"][0] or 1)
            values = [(c["kb"][0] or 0) / kb_scale, c["held"][0] or 0, c["refused"][0] or 0]
            errors = [half_or_zero(c["kb"][1]) / kb_scale, half_or_zero(c["held"][1]),
                      half_or_zero(c["refused"][1])]
            axes[2].bar([x + 0.38 * i for x in range(3)], values, 0.38, yerr=errors,
                        capsize=3, color=color, label=variant)
        axes[2].set_xticks([x + 0.19 for x in range(3)], labels)
        axes[2].set(ylabel="share (sync kB: of on demand's)",
                    title="What auto saves and costs")
        for ax in axes:
            ax.legend(fontsize=7)
        fig.suptitle("Experiment 9: mode auto over a load ramp (mean, 95% CI over "
                     "repetitions)", fontsize=9)
        return save(fig, exp_dir)
