"""Figures of an evaluation, as PNG files: ROC, precision-recall, calibration, confusion.

Curves come from scikit-learn (``roc_curve``, ``precision_recall_curve``,
``calibration_curve``); only the expected calibration error is written here (scikit-learn has
none). Every function takes probabilities (N, C) and one-hot / 0-1 labels (N, C); a class's
unknown labels (NaN, ``data.missing_labels``) are left out of its curve.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import auc, precision_recall_curve, roc_curve

from src.files import save_figure


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
    save_figure(fig, path, dpi=90)
    plt.close(fig)
    return path


def _two_valued(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _known(onehot: np.ndarray, probs: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of class ``j`` on the scans whose label is known."""
    known = ~np.isnan(onehot[:, j])
    return onehot[known, j], probs[known, j]


def plot_roc(probs: np.ndarray, onehot: np.ndarray, names: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(names):
        y, p = _known(onehot, probs, j)
        if _two_valued(y):
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{name} ({auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (AUC)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_pr(probs: np.ndarray, onehot: np.ndarray, names: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(names):
        y, p = _known(onehot, probs, j)
        if _two_valued(y):
            prec, rec, _ = precision_recall_curve(y, p)
            ax.plot(rec, prec, label=f"{name} (prev. {y.mean():.2f})")
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
        y, p = _known(onehot, probs, j)
        ece[name] = expected_calibration_error(y, p, n_bins)
        if _two_valued(y):
            frac, mean = calibration_curve(y, p, n_bins=n_bins)
            ax.plot(mean, frac, "o-", ms=3, label=f"{name} (ECE {ece[name]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", title="Calibration")
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path), ece


def plot_confusion(tables: list[tuple[str, np.ndarray, list[str]]], path: Path) -> Path:
    """The task's confusion tables (``Task.confusion_tables``: title, counts with truth in
    rows, labels), side by side, three per row."""
    cols = min(3, len(tables))
    rows = int(np.ceil(len(tables) / cols))
    size = max(len(labels) for _, _, labels in tables)
    fig, axes = plt.subplots(
        rows, cols, figsize=((1.1 * size + 1) * cols, (1.0 * size + 0.9) * rows), squeeze=False
    )
    for ax, (title, counts, labels) in zip(axes.flat, tables, strict=False):
        _matrix(ax, counts, labels, labels, title)
    for ax in list(axes.flat)[len(tables) :]:
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
