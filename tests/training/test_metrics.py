"""Metrics equal scikit-learn's; a single-class finding gets NaN AUC and a warning."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from src.training.metrics import (
    compute_binary_metrics,
    compute_metrics,
    compute_multiclass_metrics,
)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multilabel_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, c = 200, 5
    labels = (rng.random((n, c)) < [0.1, 0.3, 0.5, 0.2, 0.4]).astype(int)
    logits = rng.normal(size=(n, c)) + 1.5 * labels
    labels[:, 3] = 0  # a finding with one class only in this split
    names = [f"f{j}" for j in range(c)]
    with pytest.warns(RuntimeWarning, match="f3"):
        m = compute_metrics(logits, labels, names)
    probs = sigmoid(logits)
    pred = (probs >= 0.5).astype(int)
    aucs = [roc_auc_score(labels[:, j], probs[:, j]) for j in (0, 1, 2, 4)]
    assert np.isnan(m["auc/f3"])
    assert m["roc_auc_macro"] == pytest.approx(np.mean(aucs))
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(labels.ravel(), probs.ravel()))
    assert m["f1_macro"] == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0))
    assert m["precision_macro"] == pytest.approx(
        precision_score(labels, pred, average="macro", zero_division=0)
    )
    assert m["recall_macro"] == pytest.approx(
        recall_score(labels, pred, average="macro", zero_division=0)
    )
    assert m["accuracy"] == pytest.approx((labels == pred).mean())
    spec = [recall_score(1 - labels[:, j], 1 - pred[:, j]) for j in range(c)]
    assert m["specificity_macro"] == pytest.approx(np.mean(spec))
    tn = ((labels == 0) & (pred == 0)).sum()
    assert m["specificity_micro"] == pytest.approx(tn / (labels == 0).sum())
    for j, name in enumerate(names):
        assert m[f"support/{name}"] == labels[:, j].sum()
        assert m[f"sensitivity/{name}"] == pytest.approx(
            recall_score(labels[:, j], pred[:, j], zero_division=0)
        )
        assert m[f"specificity/{name}"] == pytest.approx(spec[j])
        assert m[f"f1/{name}"] == pytest.approx(f1_score(labels[:, j], pred[:, j], zero_division=0))


def test_binary_metrics_equal_sklearn():
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.3).astype(int)
    logit = rng.normal(size=300) + 2 * y
    m = compute_binary_metrics(logit[:, None], y[:, None], ["normal", "pneumonia"])
    p = sigmoid(logit)
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(((p >= 0.5) == y).mean())
    assert m["sensitivity/pneumonia"] == pytest.approx(recall_score(y, p >= 0.5))
    assert m["specificity/pneumonia"] == pytest.approx(recall_score(1 - y, p < 0.5))
    assert m["f1_macro"] == pytest.approx(f1_score(y, p >= 0.5))
    assert m["precision_macro"] == pytest.approx(precision_score(y, p >= 0.5))
    assert m["support/pneumonia"] == y.sum()


def test_multiclass_metrics_equal_sklearn():
    rng = np.random.default_rng(5)
    y = rng.choice(3, size=400, p=[0.5, 0.4, 0.1])
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), y] += 1.5
    names = ["normal", "benign", "malignant"]
    m = compute_multiclass_metrics(logits, y, names)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = prob.argmax(1)
    assert m["roc_auc_macro"] == pytest.approx(
        roc_auc_score(y, prob, multi_class="ovr", average="macro")
    )
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    recalls = recall_score(y, pred, average=None)
    assert m["recall_macro"] == pytest.approx(balanced_accuracy_score(y, pred))
    for j, name in enumerate(names):
        assert m[f"recall/{name}"] == pytest.approx(recalls[j])
        assert m[f"auc/{name}"] == pytest.approx(roc_auc_score(y == j, prob[:, j]))
        assert m[f"specificity/{name}"] == pytest.approx(recall_score(y != j, pred != j))
        assert m[f"f1/{name}"] == pytest.approx(f1_score(y == j, pred == j))
        assert m[f"support/{name}"] == (y == j).sum()
