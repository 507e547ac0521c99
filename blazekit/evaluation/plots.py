"""PR-curve PNGs (a bare matplotlib Figure rendered by Agg: headless, no pyplot state)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np


def plot_pr_curves(curves: Mapping[str, np.ndarray], path: Union[str, os.PathLike],
                   aps: Optional[Mapping[str, float]] = None, title: str = "WIDER FACE val") -> Path:
    """Draw ``{name: [T, 2] (precision, recall)}`` curves to one PNG; legend shows AP when given."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state or backend switch, faster import

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 5), dpi=100)
    ax = fig.subplots()
    for name, curve in curves.items():
        c = np.asarray(curve, dtype=float)
        prec, rec = c[:, 0], c[:, 1]
        keep = np.isfinite(prec) & np.isfinite(rec)
        label = f"{name} (AP {aps[name]:.4f})" if aps and name in aps else name
        ax.plot(rec[keep], prec[keep], label=label, linewidth=2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)  # a bare Figure renders with Agg for .png
    return path
