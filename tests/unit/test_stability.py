"""Verdict stability (experiments/analysis/stability.py) on synthetic raw data: a claim
whose effect is clearly present, clearly absent, and at the boundary of its decision."""
import random

import pytest

from experiments.analysis import stability as stab
from experiments.analysis.stats import mean_ci


def effect_claim(points, _exp_dir, draw=True):
    """A claim decided on its interval: the effect (one value a repetition) is positive
    when its 95% interval is above 0, absent when below, not shown when it straddles."""
    mean, half = mean_ci([p["effect"] for p in points])
    if half is None:
        return {"verdict": "not shown"}
    if mean - half > 0:
        return {"verdict": "holds"}
    if mean + half < 0:
        return {"verdict": "does not hold"}
    return {"verdict": "not shown"}


def campaign(effects):
    return [{"repetition": r, "variant": "", "effect": e} for r, e in enumerate(effects)]


@pytest.mark.parametrize("effects, verdict, stable", [
    ([1.0, 1.1, 0.9, 1.05, 0.95], "holds", True),  # clearly present
    ([-1.0, -1.1, -0.9, -1.05, -0.95], "does not hold", True),  # clearly absent
    # at the boundary: the interval reaches just below 0 (mean 0.15, lower end -0.12)
    ([0.05, 0.3, 0.25, -0.2, 0.35], "not shown", False),
])
def test_stability_is_high_where_the_effect_is_clear_and_low_at_the_boundary(
        effects, verdict, stable):
    points = campaign(effects)
    got = effect_claim(points, "")["verdict"]
    assert got == verdict
    value = stab.stability(effect_claim, points, "", got)
    assert (value >= stab.STABLE) is stable, value
    if stable:
        assert value > 0.99
    else:
        assert 0.3 < value < 0.8  # the resamples go either way


def test_an_unstable_verdict_says_how_many_repetitions_would_settle_it():
    points = campaign([0.05, 0.3, 0.25, -0.2, 0.35])  # the boundary case above
    m, verdict = stab.repetitions_needed(effect_claim, points, "")
    # more repetitions of the same spread narrow the interval, which then leaves 0
    # out: the question settles, at "holds"
    assert verdict == "holds" and 5 < m <= stab.MAX_REPETITIONS
    assert stab.verdicts(effect_claim, points, "", 400, 7, m)["holds"] >= 0.85 * 400
    assert stab.verdicts(effect_claim, points, "", 400, 7, m - 1)["holds"] < 0.95 * 400
    text = stab.describe(0.6, (m, verdict), 5, True)
    assert f"about {m} repetitions in all ({m - 5} more) would settle it" in text


def test_no_effect_at_all_is_a_stable_not_shown():
    # mean exactly 0: the interval straddles 0 in the run and in nearly every resample,
    # of the run's size and of many more; "not shown" is then the settled answer
    points = campaign([0.3, -0.3, 0.3, -0.3, 0.0, 0.0])
    assert effect_claim(points, "")["verdict"] == "not shown"
    assert stab.stability(effect_claim, points, "", "not shown") >= stab.STABLE
    counts = stab.verdicts(effect_claim, points, "", 200, 1, 40)
    assert counts.most_common(1)[0][0] == "not shown"
    assert "would not settle it" in stab.describe(0.5, None, 6, True)


def test_stability_is_seeded_and_needs_three_repetitions():
    points = campaign([0.05, 0.3, 0.25, -0.2, 0.35])
    first = stab.stability(effect_claim, points, "", "not shown")
    assert stab.stability(effect_claim, points, "", "not shown") == first
    assert stab.stability(effect_claim, campaign([1.0, 2.0]), "", "holds") is None


def test_a_resample_keeps_each_repetitions_variants_together():
    points = [{"repetition": r, "variant": v} for r in range(3) for v in ("a", "b")]
    drawn = stab.resample(points, random.Random(1))
    assert len(drawn) == 6
    for j in range(3):
        assert sorted(p["variant"] for p in drawn if p["repetition"] == j) == ["a", "b"]
