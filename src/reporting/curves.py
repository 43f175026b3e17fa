"""Training curves as PNG files in the run folder, redrawn after every epoch.

- ``loss_curve.png``: training and validation loss per epoch;
- ``recall_curve.png``: validation recall of every class per epoch.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global
backend switch) and written atomically, so a viewer never sees a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in history if key in r]
    return [int(r["epoch"]) for r in rows], [float(r[key]) for r in rows]


def write_curves(history: list[dict[str, Any]], run_dir: Path, class_names: list[str]) -> None:
    """(Re)write ``loss_curve.png`` and ``recall_curve.png`` in ``run_dir`` from the history."""
    run_dir = Path(run_dir)
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    for key, label in (("train/loss", "train"), ("val/loss", "validation (unweighted)")):
        ax.plot(*_series(history, key), marker="o", markersize=3, label=label)
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, run_dir / "loss_curve.png")

    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    for name in class_names:
        ax.plot(*_series(history, f"val/recall/{name}"), marker="o", markersize=3, label=name)
    ax.set(xlabel="epoch", ylabel="recall", title="Validation recall per class", ylim=(-0.03, 1.03))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    _save(fig, run_dir / "recall_curve.png")
