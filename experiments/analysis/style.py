"""The one look of every figure (runs and campaigns), and how a figure is saved."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"figure.dpi": 120, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False}


def save(fig, run_dir: str, name: str | None = None) -> list[str]:
    """The figure as PNG and PDF in the folder's figures/, named ``name`` or, by default,
    after the folder (an experiment's: e5k_rejoin_kernel/figures/e5k_rejoin_kernel.png)."""
    name = name or os.path.basename(os.path.normpath(run_dir))
    out = os.path.join(run_dir, "figures")
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, f"{name}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return paths
