"""Statistics of the reproduction suite: means with Student-t confidence intervals."""
from __future__ import annotations

import math
import statistics


MIN_REPETITIONS = 5  # a verdict needs at least this many seeded repetitions per configuration
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
