"""Figures, numbers and verdicts of the reproduction suite, from raw data alone.

Reads a campaign folder (experiments/reproduce.py) point by point; needs no
network, no root and no Mininet. Each experiment's spec names its analysis
(one module here per experiment); an analysis turns the points into figures
(PNG and PDF, titled, with units, legends and 95% confidence intervals over
the seeded repetitions), a table of numbers and a verdict on the spec's
claim: "holds", "does not hold" or "not shown" (the run could not decide),
with the reason in numbers.

=====================  ==================================================
stats.py               means and Student-t intervals
points.py              reading a campaign's raw data
attribution.py         which node carried each session (from node events)
style.py               the look of every figure
periodic_window.py ..  one module per experiment (e1 .. e8, e9 auto_switching.py,
                       e10 window.py)
report.py              every analysis, the verdicts and REPORT.md
=====================  ==================================================

    fwcluster figures            # every campaign and run under results/
"""
from experiments.analysis.auto_switching import auto_switching
from experiments.analysis.combined_interval import combined_interval
from experiments.analysis.delayed import delayed
from experiments.analysis.home_vs_sync import home_vs_sync
from experiments.analysis.points import load_points
from experiments.analysis.rejoin import coverage
from experiments.analysis.report import ANALYSES, report
from experiments.analysis.scaling import predicted_share
from experiments.analysis.stats import mean_ci, t975

__all__ = ["ANALYSES", "auto_switching", "combined_interval", "coverage", "delayed", "load_points", "mean_ci", "predicted_share",
           "report", "t975"]
