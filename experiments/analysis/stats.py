"""Statistics of the reproduction suite: means with Student-t confidence intervals,
medians (and other statistics of pooled sessions) with bootstrap intervals."""
from __future__ import annotations

import math
import random
import statistics


_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


# -- statistics ------------------------------------------------------------
def t975(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    if df in _T975:
        return _T975[df]
    smaller = [d for d in _T975 if d < df]
    return _T975[max(smaller)] if df < 30 else 1.96


def mean_ci(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its 95% confidence interval (None with < 2 values)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    if len(values) < 2:
        return values[0], None
    return statistics.fmean(values), t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def fmt(mean, half, digits: int = 3, unit: str = "") -> str:
    if mean is None:
        return "n/a"
    text = f"{mean:.{digits}g}"
    if half is not None:
        text += f" ± {half:.{digits}g}"
    return text + (f" {unit}" if unit else "")


def half_or_zero(half):
    return half if half is not None else 0.0


def compare_intervals(high: tuple, low: tuple) -> str:
    """Whether ``high``'s 95% interval (mean, half) lies above ``low``'s: "holds",
    below it: "does not hold", or they overlap: "not shown"."""
    (m1, h1), (m2, h2) = high, low
    h1, h2 = half_or_zero(h1), half_or_zero(h2)
    if m1 - h1 > m2 + h2:
        return "holds"
    if m1 + h1 < m2 - h2:
        return "does not hold"
    return "not shown"


def combine(parts) -> str:
    """A claim's verdict from its parts' verdicts: "holds" when all hold, "does not
    hold" when any does not, else "holds (in part)" or "not shown"."""
    decided = list(parts)
    if all(v == "holds" for v in decided):
        return "holds"
    if "does not hold" in decided:
        return "does not hold"
    return "holds (in part)" if "holds" in decided else "not shown"


def bootstrap_difference(a: list[list[float]], b: list[list[float]], statistic=statistics.median,
                         resamples: int = 2000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float, float] | None:
    """``statistic`` of the pooled values of ``a`` minus that of ``b``, with a
    percentile bootstrap interval: repetitions (``a[i]`` and ``b[i]`` are the same
    seeded repetition's values in two configurations) are drawn with replacement,
    together, then each drawn repetition's values within it. (estimate, low, high),
    or None when either side has no values."""
    pairs = [(x, y) for x, y in zip(a, b) if x and y]
    if not pairs:
        return None
    estimate = (statistic([v for x, _ in pairs for v in x])
                - statistic([v for _, y in pairs for v in y]))
    rng = random.Random(seed)
    diffs = []
    for _ in range(resamples):
        xs, ys = [], []
        for _ in pairs:
            x, y = pairs[rng.randrange(len(pairs))]
            xs += rng.choices(x, k=len(x))
            ys += rng.choices(y, k=len(y))
        diffs.append(statistic(xs) - statistic(ys))
    diffs.sort()
    tail = (1 - level) / 2
    return (estimate, diffs[int(tail * (resamples - 1))],
            diffs[int(round((1 - tail) * (resamples - 1)))])
