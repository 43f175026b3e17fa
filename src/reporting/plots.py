"""Figures of an evaluation, as PNG files: ROC, precision-recall, calibration, confusion, curves.

Curves come from scikit-learn (``roc_curve``, ``precision_recall_curve``,
``calibration_curve``); only the expected calibration error is written here (scikit-learn has
none). Every function takes probabilities (N, C) and one-hot / 0-1 labels (N, C).
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, confusion_matrix, precision_recall_curve, roc_curve


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the sample-weighted mean |accuracy - confidence| over equal-width bins of p."""
    y, p = np.asarray(y, float).ravel(), np.asarray(p, float).ravel()
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - p[m].mean())
    return float(total / max(len(p), 1))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _two_valued(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def plot_roc(probs: np.ndarray, onehot: np.ndarray, names: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(names):
        if _two_valued(onehot[:, j]):
            fpr, tpr, _ = roc_curve(onehot[:, j], probs[:, j])
            ax.plot(fpr, tpr, label=f"{name} ({auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (AUC)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_pr(probs: np.ndarray, onehot: np.ndarray, names: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(names):
        if _two_valued(onehot[:, j]):
            prec, rec, _ = precision_recall_curve(onehot[:, j], probs[:, j])
            ax.plot(rec, prec, label=f"{name} (prev. {onehot[:, j].mean():.2f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def plot_calibration(
    probs: np.ndarray, onehot: np.ndarray, names: list[str], path: Path, n_bins: int = 10
) -> tuple[Path, dict[str, float]]:
    """Reliability diagram per class; returns the path and the ECE of each class."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ece = {}
    for j, name in enumerate(names):
        ece[name] = expected_calibration_error(onehot[:, j], probs[:, j], n_bins)
        if _two_valued(onehot[:, j]):
            frac, mean = calibration_curve(onehot[:, j], probs[:, j], n_bins=n_bins)
            ax.plot(mean, frac, "o-", ms=3, label=f"{name} (ECE {ece[name]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", title="Calibration")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path), ece


def plot_confusion(
    onehot: np.ndarray, decided: np.ndarray, names: list[str], path: Path, multiclass: bool
) -> Path:
    """Multi-class: one K x K matrix. Multi-label: a 2 x 2 table per finding."""
    if multiclass:
        cm = confusion_matrix(onehot.argmax(1), decided.argmax(1), labels=range(len(names)))
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.5))
        _matrix(ax, cm, names, names, "Confusion (rows: truth)")
        return _save(fig, path)
    cols = min(3, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.9 * rows), squeeze=False)
    for j, name in enumerate(names):
        cm = confusion_matrix(onehot[:, j], decided[:, j], labels=[0, 1])
        _matrix(axes.flat[j], cm, ["neg", "pos"], ["neg", "pos"], name)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    return _save(fig, path)


def _matrix(ax, cm: np.ndarray, rows: list[str], cols: list[str], title: str) -> None:
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "w")
    ax.set_xticks(range(len(cols)), cols, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set(xlabel="predicted", ylabel="truth")
    ax.set_title(title, fontsize=8)


def plot_training_curves(metrics_csv: Path, path: Path) -> Path | None:
    """Loss and validation AUC per epoch from ``metrics.csv`` (None when there is none)."""
    if not Path(metrics_csv).is_file():
        return None
    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    epochs = [int(r["epoch"]) for r in rows]

    def series(key: str) -> list[float]:
        return [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key in ("train/loss", "val/loss"):
        if key in rows[0]:
            a.plot(epochs, series(key), label=key)
    a.set(xlabel="epoch", title="loss")
    a.legend(fontsize=7)
    for key in ("val/roc_auc_macro", "val/accuracy"):
        if key in rows[0]:
            b.plot(epochs, series(key), label=key)
    b.set(xlabel="epoch", title="validation")
    b.legend(fontsize=7)
    return _save(fig, path)
