"""Classification metrics: one engine for point estimates and bootstrap replicates.

Every metric is a weighted statistic over scans. ``metric_replicates`` takes a matrix of weights,
one row per replicate: a row of ones is the point estimate; a row of counts (how often each
scan's patient was drawn, ``replicate_weights``) is a bootstrap replicate. So the figure in
``metrics.csv`` and the centre of its confidence interval come from the same code, and a
thousand replicates cost one sort and a few matrix products.

Inputs are probabilities (N, C), 0/1 truth (N, C; NaN for an unknown label, left out of every
metric of its output, bootstrap replicates included) and 0/1 decisions (N, C), one column per
model output; the task (``src.training.tasks``) turns logits and labels into these and picks
which metrics it reports. A metric that a replicate leaves undefined (AUC or sensitivity without
a positive, specificity without a negative) is NaN there and left out of macro means.

Per output: ``auc``, ``f1``, ``precision``, ``recall`` (= ``sensitivity``), ``specificity``,
``support`` (known positives). Over outputs: ``roc_auc_macro``, ``roc_auc_micro`` (all known
(scan, output) pairs pooled), ``f1_macro``, ``precision_macro``, ``recall_macro``,
``sensitivity_macro``, ``specificity_macro``, ``specificity_micro``, ``accuracy`` (the share of
known label cells decided right: with every label known, the mean over outputs of per-output
accuracy, as MedMNIST reports multi-label ACC) and ``subset_accuracy`` (every known output of a
scan right, over scans with a known label).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

PER_CLASS = ("auc", "f1", "precision", "recall", "sensitivity", "specificity", "support")
HEADS = (
    "roc_auc_macro",
    "roc_auc_micro",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "sensitivity_macro",
    "specificity_macro",
    "specificity_micro",
    "accuracy",
    "subset_accuracy",
)
REPLICATES_PER_CHUNK = 100  # bounds memory: a chunk holds (chunk, scans x outputs) weights


def metric_keys(names: list[str]) -> list[str]:
    """Every key ``metric_replicates`` returns for outputs ``names``, in its order."""
    return [*HEADS, *(f"{m}/{n}" for n in names for m in PER_CLASS)]


def replicate_weights(
    groups: np.ndarray | list | None, n: int, n_boot: int, seed: int = 0
) -> np.ndarray:
    """(n_boot, n) weights: how often each scan's group (patient) was drawn in each replicate;
    every scan is its own group when ``groups`` is None."""
    rng = np.random.default_rng(seed)
    if groups is None:
        codes, n_groups = np.arange(n), n
    else:
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
        n_groups = int(codes.max()) + 1
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, codes]


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one output under each row of ``weights`` (B, n); tied scores count one half
    (the Mann-Whitney statistic, as scikit-learn's ``roc_auc_score``). NaN for a row without a
    positive or a negative."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    y = labels[order]
    pos = np.add.reduceat(w * y, starts, axis=1)  # (B, levels): positive weight per score level
    neg = np.add.reduceat(w * (1 - y), starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    wp, wn = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (neg_below + 0.5 * neg)).sum(1) / (wp * wn)
    return np.where((wp > 0) & (wn > 0), auc, np.nan)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _nanmean(stack: list[np.ndarray]) -> np.ndarray:
    values = np.stack(stack)
    valid = ~np.isnan(values)
    with np.errstate(invalid="ignore"):
        return np.where(valid, values, 0).sum(0) / valid.sum(0)


def metric_replicates(
    probs: np.ndarray,
    truth: np.ndarray,
    decided: np.ndarray,
    names: list[str],
    weights: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every metric (see the module doc) under each row of ``weights`` (B, N): ``{key: (B,)}``."""
    probs, y, d = (
        np.asarray(a, np.float64).reshape(len(probs), -1) for a in (probs, truth, decided)
    )
    known = (~np.isnan(y)).astype(np.float64)  # unknown labels (NaN) count nowhere
    y = np.nan_to_num(y)
    w = np.asarray(weights, np.float64)
    pos, neg = y * known, (1 - y) * known
    tp, fp = w @ (pos * d), w @ (neg * d)  # (B, C)
    fn, tn = w @ (pos * (1 - d)), w @ (neg * (1 - d))
    per = {
        "auc": np.stack(
            [weighted_auc(probs[:, j], y[:, j], w * known[:, j]) for j in range(len(names))], 1
        ),
        "f1": np.nan_to_num(_ratio(2 * tp, 2 * tp + fp + fn)),  # scikit-learn's zero_division=0
        "precision": np.nan_to_num(_ratio(tp, tp + fp)),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "support": tp + fn,
    }
    per["recall"] = per["sensitivity"]
    columns = list(range(len(names)))
    right = ((y == d) | (known == 0)).all(1).astype(np.float64)  # every known output right
    any_known = known.any(1).astype(np.float64)
    pooled = np.repeat(w, len(names), axis=1) * known.ravel()  # every known (scan, output)
    out = {
        "roc_auc_macro": _nanmean([per["auc"][:, j] for j in columns]),
        "roc_auc_micro": weighted_auc(probs.ravel(), y.ravel(), pooled),
        "f1_macro": _nanmean([per["f1"][:, j] for j in columns]),
        "precision_macro": _nanmean([per["precision"][:, j] for j in columns]),
        "recall_macro": _nanmean([per["recall"][:, j] for j in columns]),
        "sensitivity_macro": _nanmean([per["sensitivity"][:, j] for j in columns]),
        "specificity_macro": _nanmean([per["specificity"][:, j] for j in columns]),
        "specificity_micro": _ratio(tn.sum(1), (tn + fp).sum(1)),
        "accuracy": _ratio(w @ (known * (y == d)).sum(1), w @ known.sum(1)),
        "subset_accuracy": _ratio(w @ (right * any_known), w @ any_known),
    }
    for j, name in enumerate(names):
        out |= {f"{m}/{name}": per[m][:, j] for m in PER_CLASS}
    return out


def point_metrics(
    probs: np.ndarray, truth: np.ndarray, decided: np.ndarray, names: list[str]
) -> dict[str, float]:
    """``metric_replicates`` with unit weights, as floats; warns naming the outputs whose AUC
    is undefined (one label value only in this split)."""
    values = metric_replicates(probs, truth, decided, names, np.ones((1, len(probs))))
    undefined = [n for n in names if np.isnan(values[f"auc/{n}"][0])]
    if undefined:
        warnings.warn(
            "AUC undefined (only one label value in this split) for: "
            + ", ".join(undefined)
            + "; left out of roc_auc_macro",
            RuntimeWarning,
            stacklevel=3,
        )
    return {k: float(v[0]) for k, v in values.items()}


def confidence_intervals(
    metric_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    n: int,
    groups: np.ndarray | list | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "lo", "hi"}}``: ``metric_fn(weights)`` at unit weights, and a
    percentile bootstrap interval over ``n_boot`` replicates resampled by ``groups`` (patients).

    Replicates where a metric is undefined are left out of its interval; with fewer than ten
    defined replicates (or ``n_boot`` 0) the bounds are NaN.
    """
    point = metric_fn(np.ones((1, n)))
    out = {k: {"value": float(v[0]), "lo": np.nan, "hi": np.nan} for k, v in point.items()}
    if n_boot <= 0:
        return out
    weights = replicate_weights(groups, n, n_boot, seed)
    chunks = [
        metric_fn(weights[i : i + REPLICATES_PER_CHUNK])
        for i in range(0, n_boot, REPLICATES_PER_CHUNK)
    ]
    tail = (1 - confidence) / 2 * 100
    for key in out:
        values = np.concatenate([c[key] for c in chunks])
        values = values[~np.isnan(values)]
        if len(values) >= 10:
            out[key]["lo"], out[key]["hi"] = np.percentile(values, [tail, 100 - tail]).tolist()
    return out


def sigmoid(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """float64 probabilities of sigmoid outputs (no float32 saturation: ranks survive)."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def compute_metrics(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    class_names: list[str] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Multi-label metrics from logits (N, C) and 0/1 labels (N, C): one sigmoid per finding,
    decided at ``threshold``. Class names default to the column numbers. Every task's metrics
    come from the same engine (``Task.metrics``); this is its multi-label front door."""
    probs = sigmoid(logits)
    truth = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, np.float64)
    if truth.shape != probs.shape:
        raise ValueError(f"logits {probs.shape} and labels {truth.shape} differ in shape")
    names = list(class_names or [str(j) for j in range(probs.shape[1])])
    return point_metrics(probs, truth, (probs >= threshold).astype(np.float64), names)
