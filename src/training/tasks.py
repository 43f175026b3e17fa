"""Task objects own the loss, the activation and the metrics; the training loop never branches.

- ``MultiLabelTask``: one sigmoid output per finding, BCE-with-logits (optional ``pos_weight``).
- ``BinaryTask``: one sigmoid output, BCE-with-logits (optional ``pos_weight``).
- ``MultiClassTask``: softmax over classes, cross-entropy (optional class weights).

``loss`` is the training loss (weighted when asked); ``validation_loss`` is always unweighted,
so class weights never distort early stopping or the choice of the best checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from src.config import Config
from src.training.metrics import (
    compute_binary_metrics,
    compute_metrics,
    compute_multiclass_metrics,
)


class MultiLabelTask:
    def __init__(self, class_names: list[str], pos_weight: torch.Tensor | None = None):
        self.class_names = list(class_names)
        self.num_outputs = len(class_names)
        self.pos_weight = pos_weight

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pw = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pw)

    def validation_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float())

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return compute_metrics(logits, target, self.class_names)


class BinaryTask(MultiLabelTask):
    """One sigmoid output; ``class_names`` are [negative, positive] or just [positive]."""

    def __init__(self, class_names: list[str], pos_weight: torch.Tensor | None = None):
        super().__init__(class_names, pos_weight)
        self.num_outputs = 1

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return compute_binary_metrics(logits, target, self.class_names)


class MultiClassTask:
    def __init__(self, class_names: list[str], class_weights: torch.Tensor | None = None):
        self.class_names = list(class_names)
        self.num_outputs = len(class_names)
        self.class_weights = class_weights

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), target.reshape(-1).long(), weight=w)

    def validation_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.reshape(-1).long())

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def metrics(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return compute_multiclass_metrics(logits, target, self.class_names)


Task = MultiLabelTask | BinaryTask | MultiClassTask


def positive_weights(labels: np.ndarray) -> torch.Tensor:
    """BCE ``pos_weight`` = negatives / positives per column (1 where a column has none)."""
    pos = labels.sum(0)
    neg = len(labels) - pos
    return torch.as_tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Class weights proportional to 1 / count, normalised to mean 1 over classes."""
    counts = np.bincount(labels.astype(int).reshape(-1), minlength=num_classes).astype(float)
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return torch.as_tensor(w * num_classes / w.sum(), dtype=torch.float32)


def build_task(cfg: Config, train_labels: np.ndarray) -> Task:
    """The task of ``data.task``, with loss weights from the training split's labels."""
    names = cfg.class_names
    if cfg.data.task == "multiclass":
        weights = inverse_frequency_weights(train_labels, len(names))
        return MultiClassTask(names, weights if cfg.train.class_weights else None)
    pw = positive_weights(train_labels.reshape(len(train_labels), -1))
    if cfg.data.task == "binary":
        return BinaryTask(names, pw if cfg.train.pos_weight else None)
    return MultiLabelTask(names, pw if cfg.train.pos_weight else None)
