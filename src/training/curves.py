"""Training curves as PNG files in the run folder, redrawn after every epoch; the run report
shows the same files.

- ``loss_curve.png``: training and validation loss per epoch;
- ``metric_curve.png``: validation macro AUC and the monitored metric (``train.monitor``);
- ``recall_curve.png``: validation recall of every class per epoch.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global
backend switch) and written atomically, so a viewer never sees a half-written file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from src.files import save_figure

CURVE_FILES = ("loss_curve.png", "metric_curve.png", "recall_curve.png")


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in history if key in r]
    return [int(r["epoch"]) for r in rows], [float(r[key]) for r in rows]


def _figure(
    history: list[dict[str, Any]], lines: dict[str, str], title: str, ylabel: str, path: Path
) -> None:
    """One axis of ``{history key: legend label}`` lines, written atomically to ``path``."""
    fig = Figure(figsize=(6, 4), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label in lines.items():
        ax.plot(*_series(history, key), marker="o", markersize=3, label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if ylabel == "recall":
        ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def write_curves(
    history: list[dict[str, Any]], run_dir: Path, class_names: list[str], monitor: str
) -> None:
    """(Re)write the three curve files (``CURVE_FILES``) in ``run_dir`` from the history."""
    run_dir = Path(run_dir)
    loss = {"train/loss": "train", "val/loss": "validation (unweighted)"}
    _figure(history, loss, "Loss", "loss", run_dir / "loss_curve.png")
    metric = dict.fromkeys(["val/roc_auc_macro", monitor])
    metric = {k: k for k in metric if "loss" not in k}
    _figure(history, metric, "Validation", "value", run_dir / "metric_curve.png")
    recall = {f"val/recall/{n}": n for n in class_names}
    _figure(history, recall, "Validation recall per class", "recall", run_dir / "recall_curve.png")
