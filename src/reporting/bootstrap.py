"""Metrics with bootstrap confidence intervals, resampled by patient, seeded.

A bootstrap replicate draws patients (or scans, when there is no patient column) with
replacement; a scan's weight in the replicate is the number of times its patient was drawn.
Every replicate is then a weighted metric on the *same* scores, which lets the AUC of a
thousand replicates be one sort and a few matrix products (scikit-learn's ``roc_auc_score``
with ``sample_weight`` gives the same numbers one call at a time; the tests compare them).

Scores are probabilities (N, C). Labels are 0/1 (N, C) for multi-label and binary tasks,
class indices (N,) or one-hot (N, K) for multi-class. Decisions: ``score >= threshold`` per
class, or the arg-max for multi-class.
"""

from __future__ import annotations

import numpy as np


def replicate_weights(
    groups: np.ndarray | list | None, n: int, n_boot: int, seed: int = 0
) -> np.ndarray:
    """(n_boot, n) weights: how often each scan's group was drawn in each replicate."""
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
    """ROC AUC of one class under each row of ``weights`` (B, n); ties count one half.

    NaN where a replicate holds no positive or no negative.
    """
    levels, level = np.unique(scores, return_inverse=True)
    onehot = np.zeros((len(scores), len(levels)))
    onehot[np.arange(len(scores)), level] = 1.0
    pos = (weights * labels) @ onehot  # (B, U) positive weight at each score level
    neg = (weights * (1 - labels)) @ onehot
    neg_below = np.cumsum(neg, axis=1) - neg
    wp, wn = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (neg_below + 0.5 * neg)).sum(1) / (wp * wn)
    return np.where((wp > 0) & (wn > 0), auc, np.nan)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def weighted_binary_stats(
    y: np.ndarray, pred: np.ndarray, weights: np.ndarray
) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, precision, F1 per replicate from 0/1 truth and decisions."""
    tp = weights @ (y * pred)
    fp = weights @ ((1 - y) * pred)
    fn = weights @ (y * (1 - pred))
    tn = weights @ ((1 - y) * (1 - pred))
    prec = _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": np.nan_to_num(prec, nan=0.0),  # scikit-learn's zero_division=0
        "f1": np.nan_to_num(f1, nan=0.0),
    }


def replicate_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    weights: np.ndarray,
    thresholds: np.ndarray | None = None,
    multiclass: bool = False,
) -> dict[str, np.ndarray]:
    """Every metric under each weight row: ``auc/<class>``, ``f1/<class>``, ..., macro means."""
    scores = np.asarray(scores, np.float64).reshape(len(scores), -1)
    if multiclass:  # labels as class indices (N,) or already one-hot (N, K)
        lab = np.asarray(labels)
        if lab.shape == scores.shape:
            onehot = lab.astype(np.float64)
        else:
            onehot = np.eye(scores.shape[1])[lab.astype(int).reshape(-1)]
        decided = np.eye(scores.shape[1])[scores.argmax(1)]
    else:
        onehot = np.asarray(labels, np.float64).reshape(scores.shape)
        thr = np.full(scores.shape[1], 0.5) if thresholds is None else np.asarray(thresholds)
        decided = (scores >= thr).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(class_names):
        out[f"auc/{name}"] = weighted_auc(scores[:, j], onehot[:, j], weights)
        for key, value in weighted_binary_stats(onehot[:, j], decided[:, j], weights).items():
            out[f"{key}/{name}"] = value
    for key in ("auc", "sensitivity", "specificity", "f1", "precision"):
        stack = np.stack([out[f"{key}/{n}"] for n in class_names])
        with np.errstate(invalid="ignore"):
            valid = ~np.isnan(stack)
            mean = np.where(valid, stack, 0).sum(0) / valid.sum(0)
        out["roc_auc_macro" if key == "auc" else f"{key}_macro"] = mean
    correct = (decided == onehot).all(1) if multiclass else (decided == onehot).mean(1)
    out["accuracy"] = _ratio(weights @ correct, weights.sum(1))
    return out


def metrics_with_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    thresholds: np.ndarray | None = None,
    multiclass: bool = False,
    groups: np.ndarray | list | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "lo", "hi"}}``: the point estimate and a percentile bootstrap CI.

    Replicates where a metric is undefined (no positives drawn) are left out of its CI.
    """
    n = len(scores)
    point = replicate_metrics(scores, labels, class_names, np.ones((1, n)), thresholds, multiclass)
    out = {
        k: {"value": float(v[0]), "lo": float("nan"), "hi": float("nan")} for k, v in point.items()
    }
    if n_boot <= 0:
        return out
    reps = replicate_metrics(
        scores,
        labels,
        class_names,
        replicate_weights(groups, n, n_boot, seed),
        thresholds,
        multiclass,
    )
    tail = (1 - confidence) / 2 * 100
    for key, values in reps.items():
        values = values[~np.isnan(values)]
        if len(values) >= 10:
            out[key]["lo"], out[key]["hi"] = np.percentile(values, [tail, 100 - tail]).tolist()
    return out
