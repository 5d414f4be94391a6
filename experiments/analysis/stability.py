"""How sure is a verdict? The bootstrap over repetitions (issue 19).

A verdict is decided on the raw data of a few seeded repetitions. Run again, with
other seeds, the same claim could be judged otherwise. ``stability`` asks the raw
data itself: it draws as many repetitions as there are, with replacement (every
variant of a drawn repetition together, since variants share its seed and its
workload), decides the verdict again on each such resample, and gives the share
of resamples whose verdict is the one the run gave. A verdict with stability under
``STABLE`` is *unstable*; ``repetitions_needed`` then resamples more repetitions
than were run (m out of n, with replacement) to find how many would give the
verdict ``STABLE`` of the time, were the spread the one observed.

Pure: no I/O beyond what the analysis itself reads; seeded, so a report made twice
from the same raw data says the same.
"""
from __future__ import annotations

import random
from collections import Counter
from typing import Callable

RESAMPLES = 1000  # bootstrap resamples per verdict
STABLE = 0.9  # a verdict the resamples give less often than this is unstable
MIN_REPETITIONS = 3  # fewer repetitions than this say too little to resample
SEARCH_RESAMPLES = 100  # per candidate size when looking for the repetitions needed (an
# estimate of "about N": 100 resamples judge a 90% share to a few percent)
MAX_REPETITIONS = 40  # beyond this the search says "more than"

Analysis = Callable[..., dict]


def repetitions(points: list[dict]) -> list[int]:
    return sorted({p["repetition"] for p in points})


def resample(points: list[dict], rng: random.Random, size: int | None = None) -> list[dict]:
    """``size`` repetitions (as many as there are by default) drawn with replacement;
    each drawn repetition brings all its points, renumbered so that two draws of one
    repetition are two repetitions (analyses pair variants by repetition)."""
    by_rep: dict[int, list[dict]] = {}
    for p in points:
        by_rep.setdefault(p["repetition"], []).append(p)
    reps = sorted(by_rep)
    out = []
    for j in range(size or len(reps)):
        out += [{**p, "repetition": j} for p in by_rep[rng.choice(reps)]]
    return out


def verdict_of(analysis: Analysis, points: list[dict], exp_dir: str) -> str:
    return analysis(points, exp_dir, draw=False)["verdict"]


def verdicts(analysis: Analysis, points: list[dict], exp_dir: str, resamples: int,
             seed: int, size: int | None = None) -> Counter:
    """How often each verdict comes out of ``resamples`` resamples of ``size`` repetitions."""
    rng = random.Random(seed)
    return Counter(verdict_of(analysis, resample(points, rng, size), exp_dir)
                   for _ in range(resamples))


def stability(analysis: Analysis, points: list[dict], exp_dir: str, verdict: str,
              resamples: int = RESAMPLES, seed: int = 19) -> float | None:
    """Share of bootstrap resamples of the repetitions that give ``verdict``; None
    with fewer than MIN_REPETITIONS repetitions (nothing to resample)."""
    if len(repetitions(points)) < MIN_REPETITIONS:
        return None
    return verdicts(analysis, points, exp_dir, resamples, seed)[verdict] / resamples


def repetitions_needed(analysis: Analysis, points: list[dict], exp_dir: str,
                       resamples: int = SEARCH_RESAMPLES, seed: int = 19,
                       most: int = MAX_REPETITIONS) -> tuple[int, str] | None:
    """The fewest repetitions (more than were run, up to ``most``: doubling, then
    bisecting) at which one verdict comes out of at least STABLE of the resamples of
    that size, and that verdict; None when no size up to ``most`` settles one (the
    effect sits on the claim's boundary). The verdict that settles need not be the
    run's: more repetitions narrow an interval that straddled its boundary."""
    def settled(m: int) -> str | None:
        counts = verdicts(analysis, points, exp_dir, resamples, seed, m)
        verdict, n = counts.most_common(1)[0]
        return verdict if n / resamples >= STABLE else None

    low, m, found = len(repetitions(points)), len(repetitions(points)), None
    while m < most and found is None:
        m = min(most, m * 2)
        found = settled(m)
        if found is None:
            low = m
    if found is None:
        return None
    high = m
    while high - low > 1:  # settled at high, not at low
        mid = (low + high) // 2
        verdict = settled(mid)
        if verdict is not None:
            high, found = mid, verdict
        else:
            low = mid
    return high, found


def describe(value: float | None, needed: tuple[int, str] | None, have: int,
             unstable: bool) -> str:
    """The stability as REPORT.md prints it beside the verdict."""
    if value is None:
        return f"stability: not computed ({have} repetition(s), {MIN_REPETITIONS} needed)"
    text = f"stability: {value:.2f}"
    if unstable:
        if needed:
            m, verdict = needed
            text += (f"; *unstable*: about {m} repetitions in all ({m - have} more) would "
                     f"settle it, at \"{verdict}\" were the spread the one observed")
        else:
            text += (f"; *unstable*: even {MAX_REPETITIONS} repetitions would not settle it "
                     "(the effect is at the claim's boundary)")
    return text
