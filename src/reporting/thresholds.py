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

from src.config import Config

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
    scores: np.ndarray, labels: np.ndarray, cfg: Config, source: str = "val"
) -> dict[str, Any]:
    """Thresholds of every class from validation ``scores`` (N, C) and 0/1 ``labels`` (N, C).

    Returns the content of ``thresholds.json``: ``{"task", "source", "classes": {name:
    {"threshold", "rule"}}}``. A class with one label value on validation keeps 0.5 and says so.
    """
    e, names = cfg.evaluation, task_class_names(cfg)
    classes: dict[str, dict[str, Any]] = {}
    if cfg.data.task != "multiclass":
        scores = np.asarray(scores).reshape(len(scores), -1)
        labels = np.asarray(labels).reshape(scores.shape)
        for j, name in enumerate(names):
            y, s = labels[:, j].astype(int), scores[:, j]
            if name in e.sensitivity_targets:
                rule = f"sensitivity>={e.sensitivity_targets[name]:g}"
            else:
                rule = "youden" if e.threshold_rule == "youden" else "fixed 0.5"
            if rule != "fixed 0.5" and len(np.unique(y)) < 2:
                classes[name] = {
                    "threshold": 0.5,
                    "rule": f"fixed 0.5 (one label value in {source})",
                }
            elif rule == "youden":
                classes[name] = {"threshold": youden_threshold(y, s), "rule": rule}
            elif rule.startswith("sensitivity"):
                t = sensitivity_threshold(y, s, float(e.sensitivity_targets[name]))
                classes[name] = {"threshold": t, "rule": rule}
            else:
                classes[name] = {"threshold": 0.5, "rule": rule}
    return {"task": cfg.data.task, "source": source, "classes": classes}


def task_class_names(cfg: Config) -> list[str]:
    """The names of the model's outputs: one per output (a binary task has one)."""
    return cfg.class_names[-1:] if cfg.data.task == "binary" else cfg.class_names


def threshold_vector(thresholds: dict[str, Any] | None, names: list[str]) -> np.ndarray | None:
    """Thresholds in output order (None for multi-class or when none are stored)."""
    if not thresholds or not thresholds.get("classes"):
        return None
    return np.array([thresholds["classes"][n]["threshold"] for n in names], np.float64)


def rule_summary(thresholds: dict[str, Any] | None) -> str:
    """One sentence for the report: which rule chose the thresholds, on which split."""
    if not thresholds or not thresholds.get("classes"):
        return "Multi-class: the predicted class is the arg-max of the probabilities."
    rules = sorted({c["rule"] for c in thresholds["classes"].values()})
    return (
        f"Per-class thresholds chosen on the {thresholds['source']} split by: {'; '.join(rules)}."
    )


def save_thresholds(thresholds: dict[str, Any], run_dir: Path) -> Path:
    path = Path(run_dir) / THRESHOLDS_FILE
    path.write_text(json.dumps(thresholds, indent=1))
    return path


def load_thresholds(run_dir: Path) -> dict[str, Any] | None:
    """``thresholds.json`` of a run, or None when the run has not been evaluated yet."""
    path = Path(run_dir) / THRESHOLDS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
