"""Per-class decision thresholds chosen on the validation split and stored in the run folder.

Rules: Youden's J (the ROC point maximising sensitivity + specificity - 1), a target
sensitivity for named classes (``evaluation.sensitivity_targets``: the highest threshold that
still reaches it on validation), or ``fixed`` (0.5). Multi-class tasks decide by arg-max and
use no thresholds. ``thresholds.json`` records the rule of every class, so the report,
exports and inference say which rule made each decision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from src.config import EvaluationConfig
from src.files import atomic_write
from src.training.tasks import Task

THRESHOLDS_FILE = "thresholds.json"


def youden_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The threshold maximising TPR - FPR (ties: the highest such threshold)."""
    fpr, tpr, thr = roc_curve(y, score)
    best = int(np.argmax(tpr - fpr))
    return float(min(thr[best], 1.0))


def sensitivity_threshold(y: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity on (y, score) is at least ``target``."""
    _, tpr, thr = roc_curve(y, score, drop_intermediate=False)
    ok = np.flatnonzero(tpr >= target - 1e-12)
    return float(min(thr[ok[0]], 1.0))


def choose_thresholds(
    probs: np.ndarray, truth: np.ndarray, task: Task, e: EvaluationConfig, source: str = "val"
) -> dict[str, Any]:
    """Thresholds of the task's thresholded outputs from validation ``probs`` and 0/1 ``truth``
    (N, outputs; NaN: unknown, left out), by the rules of ``evaluation.*``.

    Returns the content of ``thresholds.json``: ``{"task", "source", "classes": {name:
    {"threshold", "rule"}}}`` (no classes for an arg-max task). A class with one label value on
    validation keeps 0.5 and says so.
    """
    classes: dict[str, dict[str, Any]] = {}
    for name in task.threshold_names:
        j = task.output_names.index(name)
        known = ~np.isnan(truth[:, j])  # unknown labels (data.missing_labels) choose nothing
        y, s = truth[known, j].astype(int), probs[known, j]
        if name in e.sensitivity_targets:
            rule = f"sensitivity>={e.sensitivity_targets[name]:g}"
        else:
            rule = "youden" if e.threshold_rule == "youden" else "fixed 0.5"
        if rule != "fixed 0.5" and len(np.unique(y)) < 2:
            classes[name] = {"threshold": 0.5, "rule": f"fixed 0.5 (one label value in {source})"}
        elif rule == "youden":
            classes[name] = {"threshold": youden_threshold(y, s), "rule": rule}
        elif rule.startswith("sensitivity"):
            t = sensitivity_threshold(y, s, float(e.sensitivity_targets[name]))
            classes[name] = {"threshold": t, "rule": rule}
        else:
            classes[name] = {"threshold": 0.5, "rule": rule}
    return {"task": task.kind, "source": source, "classes": classes}


def rule_summary(thresholds: dict[str, Any] | None) -> str:
    """One sentence for the report: which rule chose the thresholds, on which split."""
    if not thresholds or not thresholds.get("classes"):
        return "The predicted class is the arg-max of the probabilities (no thresholds)."
    rules = sorted({c["rule"] for c in thresholds["classes"].values()})
    return (
        f"Per-class thresholds chosen on the {thresholds['source']} split by: {'; '.join(rules)}."
    )


def threshold_values(thresholds: dict[str, Any] | None) -> dict[str, float]:
    """``{class: threshold}`` of ``thresholds.json`` content (empty for none / arg-max)."""
    return {n: c["threshold"] for n, c in (thresholds or {}).get("classes", {}).items()}


def save_thresholds(thresholds: dict[str, Any], run_dir: Path) -> Path:
    """``thresholds.json`` (read by inference and export), written atomically."""
    path = Path(run_dir) / THRESHOLDS_FILE
    with atomic_write(path) as fh:
        json.dump(thresholds, fh, indent=1)
    return path


def load_thresholds(run_dir: Path) -> dict[str, Any] | None:
    """``thresholds.json`` of a run, or None when the run has not been evaluated yet."""
    path = Path(run_dir) / THRESHOLDS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
