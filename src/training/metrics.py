"""Classification metrics on scikit-learn, for multi-label, binary and multi-class tasks.

Every function takes logits (what the model outputs) and labels, and returns a flat dict of
floats: headline metrics (``roc_auc_macro``, ``accuracy``, ...) and per-class ones keyed
``<metric>/<class name>``. A class whose labels hold one value only has AUC NaN, is left out
of the macro mean, and a warning names it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

PER_CLASS = ("auc", "f1", "precision", "recall", "sensitivity", "specificity", "support")


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _auc_or_nan(y: np.ndarray, score: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def _binary_stats(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "sensitivity": float(recall_score(y, pred, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "support": float(tp + fn),
        "_tn": float(tn),
        "_fp": float(fp),
    }


def _warn_single_class(names: list[str]) -> None:
    if names:
        warnings.warn(
            "AUC undefined (only one label value in this split) for: "
            + ", ".join(names)
            + "; left out of roc_auc_macro",
            RuntimeWarning,
            stacklevel=3,
        )


def compute_metrics(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    class_names: list[str],
    threshold: float | np.ndarray = 0.5,
) -> dict[str, float]:
    """Multi-label metrics from logits (N, C) and 0/1 labels (N, C).

    ``accuracy`` is the mean over findings of per-finding accuracy (as MedMNIST reports
    multi-label ACC); ``subset_accuracy`` requires every finding of a scan right.
    """
    scores = _sigmoid(_np(logits).astype(np.float64))
    y = _np(labels).astype(int)
    if y.shape != scores.shape:
        raise ValueError(f"logits {scores.shape} and labels {y.shape} differ in shape")
    pred = (scores >= np.asarray(threshold)).astype(int)
    out: dict[str, float] = {}
    aucs, undefined, tn_total, fp_total = [], [], 0.0, 0.0
    for j, name in enumerate(class_names):
        auc = _auc_or_nan(y[:, j], scores[:, j])
        if np.isnan(auc):
            undefined.append(name)
        else:
            aucs.append(auc)
        stats = _binary_stats(y[:, j], pred[:, j])
        tn_total += stats.pop("_tn")
        fp_total += stats.pop("_fp")
        out[f"auc/{name}"] = auc
        for key, value in stats.items():
            out[f"{key}/{name}"] = value
    _warn_single_class(undefined)
    head = {
        "roc_auc_macro": float(np.mean(aucs)) if aucs else float("nan"),
        "roc_auc_micro": _auc_or_nan(y.ravel(), scores.ravel()),
        "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
        "precision_macro": float(precision_score(y, pred, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y, pred, average="macro", zero_division=0)),
        "accuracy": float((y == pred).mean()),
        "subset_accuracy": float(accuracy_score(y, pred)),
        "specificity_macro": float(
            np.nanmean([out[f"specificity/{n}"] for n in class_names])
            if any(not np.isnan(out[f"specificity/{n}"]) for n in class_names)
            else float("nan")
        ),
        "specificity_micro": float(tn_total / (tn_total + fp_total))
        if tn_total + fp_total
        else float("nan"),
    }
    return head | out


def compute_binary_metrics(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    class_names: list[str],
    threshold: float = 0.5,
) -> dict[str, float]:
    """Binary metrics from one logit per sample and 0/1 labels; AUC is ``roc_auc_macro``."""
    score = _sigmoid(_np(logits).astype(np.float64).reshape(-1))
    y = _np(labels).astype(int).reshape(-1)
    pred = (score >= threshold).astype(int)
    auc = _auc_or_nan(y, score)
    if np.isnan(auc):
        _warn_single_class([class_names[-1]])
    stats = _binary_stats(y, pred)
    stats.pop("_tn"), stats.pop("_fp")
    name = class_names[-1]
    return (
        {
            "roc_auc_macro": auc,
            "accuracy": float(accuracy_score(y, pred)),
            "f1_macro": stats["f1"],
            "precision_macro": stats["precision"],
            "recall_macro": stats["recall"],
            "specificity_macro": stats["specificity"],
        }
        | {f"{k}/{name}": v for k, v in stats.items()}
        | {f"auc/{name}": auc}
    )


def compute_multiclass_metrics(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    class_names: list[str],
) -> dict[str, float]:
    """Multi-class metrics from logits (N, K) and class indices (N,).

    ``roc_auc_macro`` is the one-vs-rest macro AUC over classes present (as MedMNIST reports
    it); ``recall_macro`` is balanced accuracy; per class: one-vs-rest AUC, F1, precision,
    recall (= sensitivity), specificity and support.
    """
    z = _np(logits).astype(np.float64)
    z = z - z.max(1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = _np(labels).astype(int).reshape(-1)
    pred = prob.argmax(1)
    k = len(class_names)
    out: dict[str, float] = {}
    aucs, undefined = [], []
    for j, name in enumerate(class_names):
        yj = (y == j).astype(int)
        auc = _auc_or_nan(yj, prob[:, j])
        (undefined if np.isnan(auc) else aucs).append(name if np.isnan(auc) else auc)
        stats = _binary_stats(yj, (pred == j).astype(int))
        stats.pop("_tn"), stats.pop("_fp")
        out[f"auc/{name}"] = auc
        for key, value in stats.items():
            out[f"{key}/{name}"] = value
    _warn_single_class(undefined)
    labels_k = list(range(k))
    return {
        "roc_auc_macro": float(np.mean(aucs)) if aucs else float("nan"),
        "accuracy": float(accuracy_score(y, pred)),
        "f1_macro": float(f1_score(y, pred, labels=labels_k, average="macro", zero_division=0)),
        "precision_macro": float(
            precision_score(y, pred, labels=labels_k, average="macro", zero_division=0)
        ),
        "recall_macro": float(
            recall_score(y, pred, labels=labels_k, average="macro", zero_division=0)
        ),
        "specificity_macro": float(np.nanmean([out[f"specificity/{n}"] for n in class_names])),
    } | out
