"""The task object: the one place that knows whether a run is multi-label, binary or multi-class.

- ``MultiLabelTask``: one sigmoid output per finding, BCE-with-logits (optional ``pos_weight``);
  each finding decided by its own threshold.
- ``BinaryTask``: one sigmoid output (the positive class), BCE-with-logits; ``class_names`` are
  ``[negative, positive]`` or ``[positive]``.
- ``MultiClassTask``: softmax over classes, cross-entropy (optional class weights); the decision
  is the arg-max, so no thresholds.

A task reads a CSV row's label cells (``parse_label``), counts and stratifies labels for the data
layer, computes the loss (weighted for training; ``validation_loss`` always unweighted, so class
weights never distort early stopping), turns logits into probabilities and probabilities into
decisions, names its outputs and the metrics it logs, and says which test-time flips are allowed.
Nothing outside this module and config validation branches on the task kind.

Incomplete labels (multilabel, binary): a blank cell (``data.missing_labels: ignore``) or a -1
(``data.uncertain_labels: ignore``) is read as NaN, "unknown". The loss averages over known
cells only, the metrics engine leaves unknown cells out of every metric of their finding, and
strata and counts use known labels.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from src.config import Config
from src.data.records import LabelError
from src.training.metrics import metric_keys, metric_replicates, point_metrics, sigmoid

Flip = tuple[int, ...]  # spatial axes flipped together


class Task:
    """What every task shares; subclasses set the task-specific parts."""

    kind = ""
    activation = ""
    default_decision = "probability >= 0.5 per output"
    # metrics of the engine this task leaves out, and the ones it reports under another name
    dropped: tuple[str, ...] = ()
    renamed: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        class_names: list[str],
        loss_weights: torch.Tensor | None = None,
        flips: list[Flip] | None = None,
        missing: str = "error",
        uncertain: str = "error",
    ):
        self.class_names = list(class_names)
        self.output_names = list(class_names)
        self.loss_weights = loss_weights
        self.flips = list(flips or [])
        self.missing, self.uncertain = missing, uncertain  # data.missing_labels / uncertain_labels

    @classmethod
    def loss_weights_for(cls, cfg: Config, train_labels: np.ndarray) -> torch.Tensor | None:
        """BCE ``pos_weight`` (negatives / positives per output) when ``train.pos_weight``."""
        return (
            positive_weights(train_labels.reshape(len(train_labels), -1))
            if cfg.train.pos_weight
            else None
        )

    # the train key that weights the training loss against imbalance (planner: src.plan)
    loss_weight_key = "pos_weight"

    def class_shares(self, labels: np.ndarray) -> dict[str, float]:
        """Per output, the share of the images in its rarer state (positive or negative): what
        BCE's ``pos_weight`` evens out."""
        p = self.one_hot(labels).mean(0)
        return dict(zip(self.output_names, np.minimum(p, 1 - p).tolist(), strict=True))

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    @property
    def threshold_names(self) -> list[str]:
        """Outputs decided by a per-class threshold (none for an arg-max decision)."""
        return list(self.output_names)

    # ---- labels, for the data layer ----------------------------------------------------------
    def parse_label(self, cells: Mapping[str, str], columns: list[str]) -> np.ndarray:
        """The label of one CSV row as float32: one 0/1 per label column, NaN for a cell left
        unknown by ``data.missing_labels`` / ``data.uncertain_labels``."""
        return np.array([self._cell(cells.get(c), c) for c in columns], np.float32)

    def _cell(self, value: str | None, column: str) -> float:
        text = (value or "").strip()
        if text in ("0", "1", "0.0", "1.0"):
            return float(text)
        if not text and self.missing == "ignore":
            return float("nan")
        if text in ("-1", "-1.0") and self.uncertain != "error":
            return UNCERTAIN[self.uncertain]
        if not text:
            fix = "fix the cell, drop the row or set data.missing_labels: ignore"
            raise LabelError(column, f"label must be 0 or 1, got a blank cell; {fix}")
        if text in ("-1", "-1.0"):
            fix = "set data.uncertain_labels: ignore, positive or negative, or fix the cell"
            raise LabelError(column, f"label must be 0 or 1, got {value!r} (uncertain); {fix}")
        raise LabelError(
            column, f"label must be 0 or 1, got {value!r}; fix the cell or drop the row"
        )

    def label_counts(self, labels: np.ndarray) -> dict[str, int]:
        """Known positives per output (the split tables and the no-positive check)."""
        sums = np.nansum(np.asarray(labels).reshape(len(labels), -1), 0).astype(int)
        return dict(zip(self.output_names, sums.tolist(), strict=True))

    def ignored_counts(self, labels: np.ndarray) -> dict[str, int]:
        """Unknown (ignored) label cells per output."""
        unknown = np.isnan(np.asarray(labels, np.float64).reshape(len(labels), -1)).sum(0)
        return dict(zip(self.output_names, unknown.astype(int).tolist(), strict=True))

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """One class per record to stratify splits on (-1: unknown)."""
        labels = np.asarray(labels, np.float64).reshape(len(labels))
        return np.where(np.isnan(labels), -1, labels).astype(int)

    def one_hot(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Labels as (N, outputs) 0/1 float64 (NaN: unknown)."""
        return np.asarray(labels, np.float64).reshape(len(labels), self.num_outputs)

    # ---- model outputs ------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE with logits (``pos_weight`` when set), the mean over the known label cells."""
        pw = None if self.loss_weights is None else self.loss_weights.to(logits.device)
        return known_cell_bce(logits, target, pw)

    def validation_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return known_cell_bce(logits, target)

    def probabilities(self, logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """float64 (N, outputs): sigmoid per output."""
        return sigmoid(logits)

    def combine(self, member_logits: torch.Tensor) -> torch.Tensor:
        """An ensemble's logits from its members' (M, N, outputs): the logits whose sigmoid is
        the mean of the members' probabilities (log-sum-exp in log space: no overflow)."""
        return torch.logsumexp(F.logsigmoid(member_logits), 0) - torch.logsumexp(
            F.logsigmoid(-member_logits), 0
        )

    def decisions(
        self, probs: np.ndarray, thresholds: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """0/1 (N, outputs): each output against its threshold (0.5 where none is given)."""
        cut = np.array([(thresholds or {}).get(n, 0.5) for n in self.output_names], np.float64)
        return (np.asarray(probs) >= cut).astype(np.float64)

    # ---- metrics -------------------------------------------------------------------------------
    @property
    def metric_names(self) -> list[str]:
        """Every metric this task logs (``val/<name>`` in metrics.csv and W&B), loss aside."""
        keys = metric_keys(self.output_names)
        return [self.renamed.get(k, k) for k in keys if k not in self.dropped]

    def metrics(
        self,
        probs: np.ndarray,
        labels: np.ndarray | torch.Tensor,
        thresholds: Mapping[str, float] | None = None,
        weights: np.ndarray | None = None,
    ) -> dict:
        """The task's metrics of ``probs`` against ``labels``, decided at ``thresholds`` (0.5 /
        arg-max when None): floats at unit weights (``weights`` None), else ``{key: (B,)}``
        under each row of ``weights`` (bootstrap replicates)."""
        truth, decided = self.one_hot(np.asarray(labels)), self.decisions(probs, thresholds)
        if weights is None:
            values = point_metrics(probs, truth, decided, self.output_names)
        else:
            values = metric_replicates(probs, truth, decided, self.output_names, weights)
        return {self.renamed.get(k, k): v for k, v in values.items() if k not in self.dropped}

    def class_indices(self, onehot: np.ndarray) -> np.ndarray | None:
        """The one class of each row where the classes exclude each other, else None."""
        return None

    def confusion_tables(
        self, truth: np.ndarray, decided: np.ndarray
    ) -> list[tuple[str, np.ndarray, list[str]]]:
        """(title, counts with truth in rows, row/column labels) for the confusion figure: a
        2 x 2 table per output."""
        tables = []
        for j, name in enumerate(self.output_names):
            known = ~np.isnan(truth[:, j])
            y, d = truth[known, j].astype(int), decided[known, j].astype(int)
            counts = np.array([[np.sum((y == a) & (d == b)) for b in (0, 1)] for a in (0, 1)])
            tables.append((name, counts, ["neg", "pos"]))
        return tables


class MultiLabelTask(Task):
    kind, activation = "multilabel", "sigmoid"

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """The rarest positive finding of each record (-1 for none): rare findings spread
        across the splits."""
        labels = np.asarray(labels).reshape(len(labels), -1)
        strata = np.full(len(labels), -1)
        prevalence = np.nan_to_num(np.nanmean(labels, 0)) if labels.size else labels.sum(0)
        for j in np.argsort(prevalence)[::-1]:  # rarer findings overwrite commoner ones
            strata[labels[:, j] > 0.5] = j
        return strata


class BinaryTask(Task):
    """One sigmoid output for the positive class (the last of ``class_names``)."""

    kind, activation = "binary", "sigmoid"
    # one output: micro equals macro, and every output right equals accuracy
    dropped = ("roc_auc_micro", "specificity_micro", "subset_accuracy")

    def __init__(self, class_names, *args, **kwargs):
        super().__init__(class_names, *args, **kwargs)
        self.output_names = self.class_names[-1:]

    def label_counts(self, labels: np.ndarray) -> dict[str, int]:
        """Both classes: known negatives and positives."""
        labels = np.asarray(labels)
        negative = self.class_names[0] if len(self.class_names) > 1 else "negative"
        return {negative: int((labels == 0).sum()), self.output_names[0]: int((labels == 1).sum())}


class MultiClassTask(Task):
    kind, activation = "multiclass", "softmax"
    default_decision = "arg-max of the probabilities"
    dropped = ("roc_auc_micro", "specificity_micro", "accuracy")
    renamed: ClassVar[Mapping[str, str]] = {
        "subset_accuracy": "accuracy"
    }  # arg-max right: the class is right

    @classmethod
    def loss_weights_for(cls, cfg: Config, train_labels: np.ndarray) -> torch.Tensor | None:
        """Inverse class frequencies (mean 1) when ``train.class_weights``."""
        if not cfg.train.class_weights:
            return None
        return inverse_frequency_weights(train_labels, len(cfg.class_names))

    loss_weight_key = "class_weights"

    def class_shares(self, labels: np.ndarray) -> dict[str, float]:
        """Share of the images in each class (what inverse-frequency weights even out)."""
        p = self.one_hot(labels).mean(0)
        return dict(zip(self.class_names, p.tolist(), strict=True))

    @property
    def threshold_names(self) -> list[str]:
        return []

    def parse_label(self, cells: Mapping[str, str], columns: list[str]) -> np.ndarray:
        """The class index of the row's one label cell: a class name or its index."""
        value = cells.get(columns[0])
        text = (value or "").strip()
        if text in self.class_names:
            return np.array(self.class_names.index(text), np.float32)
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(self.class_names):
            return np.array(int(text), np.float32)
        raise LabelError(
            columns[0],
            f"unknown class {value!r}; expected one of {', '.join(self.class_names)} or an "
            f"index 0..{len(self.class_names) - 1}",
        )

    def label_counts(self, labels: np.ndarray) -> dict[str, int]:
        counts = np.bincount(np.asarray(labels).astype(int).reshape(-1), minlength=self.num_outputs)
        return dict(zip(self.class_names, counts.tolist(), strict=True))

    def ignored_counts(self, labels: np.ndarray) -> dict[str, int]:
        """None: a multiclass label is never left unknown (config validation)."""
        return dict.fromkeys(self.output_names, 0)

    def one_hot(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        return np.eye(self.num_outputs)[np.asarray(labels).astype(int).reshape(-1)]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if self.loss_weights is None else self.loss_weights.to(logits.device)
        return F.cross_entropy(logits.float(), target.reshape(-1).long(), weight=w)

    def validation_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.reshape(-1).long())

    def probabilities(self, logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """float64 softmax over classes."""
        if isinstance(logits, torch.Tensor):
            logits = logits.detach().float().cpu().numpy()
        z = np.asarray(logits, np.float64)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def combine(self, member_logits: torch.Tensor) -> torch.Tensor:
        """The log of the mean of the members' softmax probabilities (M, N, classes): its
        softmax is that mean."""
        return torch.logsumexp(F.log_softmax(member_logits, -1), 0) - math.log(len(member_logits))

    def decisions(self, probs: np.ndarray, thresholds: Mapping[str, float] | None = None):
        """One-hot of the arg-max (thresholds do not apply)."""
        return np.eye(self.num_outputs)[np.asarray(probs).argmax(1)]

    def class_indices(self, onehot: np.ndarray) -> np.ndarray:
        """The one class of each row (W&B's confusion matrix)."""
        return np.asarray(onehot).argmax(1)

    def confusion_tables(self, truth: np.ndarray, decided: np.ndarray):
        """One K x K matrix (truth in rows)."""
        k = self.num_outputs
        counts = np.zeros((k, k), int)
        np.add.at(counts, (truth.argmax(1), decided.argmax(1)), 1)
        return [("Confusion (rows: truth)", counts, list(self.class_names))]


TASKS = {"multilabel": MultiLabelTask, "binary": BinaryTask, "multiclass": MultiClassTask}


UNCERTAIN = {"ignore": float("nan"), "positive": 1.0, "negative": 0.0}  # a -1 cell, by policy


def known_cell_bce(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE with logits averaged over the known cells of ``target`` (NaN: unknown, no loss and
    no gradient); with every cell known it is the plain mean."""
    target = target.float()
    known = ~torch.isnan(target)
    if bool(known.all()):  # PyTorch's fused mean: gradients equal to the bit to an unmasked BCE
        return F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight)
    cells = F.binary_cross_entropy_with_logits(
        logits.float(), target.nan_to_num(0.0), pos_weight=pos_weight, reduction="none"
    )
    return (cells * known).sum() / known.sum().clamp(min=1)


def positive_weights(labels: np.ndarray) -> torch.Tensor:
    """BCE ``pos_weight`` = known negatives / known positives per column (1 where a column has
    no positive)."""
    pos, neg = (labels == 1).sum(0), (labels == 0).sum(0)
    return torch.as_tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Class weights proportional to 1 / count, normalised to mean 1 over classes."""
    counts = np.bincount(labels.astype(int).reshape(-1), minlength=num_classes).astype(float)
    w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return torch.as_tensor(w * num_classes / w.sum(), dtype=torch.float32)


def infer_task(values: Mapping[str, list[str]]) -> tuple[str, list[str]]:
    """The task kind and class names a CSV's label columns (column -> its cells) describe:
    several columns -> multilabel (one 0/1 column per finding); one column of 0/1 -> binary;
    one column of other values -> multiclass, classes sorted (numerically when indices)."""
    if len(values) > 1:
        return "multilabel", []
    (cells,) = values.values()
    distinct = sorted({c.strip() for c in cells if c.strip()})
    if set(distinct) <= {"0", "1", "0.0", "1.0"}:
        return "binary", []
    if all(v.lstrip("-").isdigit() for v in distinct):
        distinct = [str(v) for v in range(max(int(v) for v in distinct) + 1)]
    return "multiclass", distinct


def tta_flips(cfg: Config) -> list[Flip]:
    """Every combination of the axes training flipped (``data.augment.flip_axes``), none when
    training did not flip: a chest CT's heart stays on its side."""
    a = cfg.data.augment
    axes = sorted(set(a.flip_axes)) if a.flip_prob > 0 else []
    return [c for r in range(1, len(axes) + 1) for c in itertools.combinations(axes, r)]


def build_task(cfg: Config, train_labels: np.ndarray | None = None) -> Task:
    """The task of ``data.task``. With the training split's labels, the loss weights that
    ``train.pos_weight`` / ``train.class_weights`` ask for."""
    cls, d = TASKS[cfg.data.task], cfg.data
    weights = None if train_labels is None else cls.loss_weights_for(cfg, train_labels)
    return cls(cfg.class_names, weights, tta_flips(cfg), d.missing_labels, d.uncertain_labels)
