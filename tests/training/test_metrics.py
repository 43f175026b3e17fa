"""One metrics engine: point estimates equal scikit-learn's, a point estimate is the replicate
with unit weights, and bootstrap CIs (resampled by patient) cover the true AUC ~95 %."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from src.training.metrics import (
    compute_metrics,
    confidence_intervals,
    metric_keys,
    metric_replicates,
    replicate_weights,
    weighted_auc,
)
from src.training.tasks import BinaryTask, MultiClassTask, MultiLabelTask


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
    defined = (0, 1, 2, 4)
    aucs = [roc_auc_score(labels[:, j], probs[:, j]) for j in defined]
    assert np.isnan(m["auc/f3"]) and np.isnan(m["sensitivity/f3"])  # undefined, not 0
    assert m["roc_auc_macro"] == pytest.approx(np.mean(aucs))
    assert m["roc_auc_micro"] == pytest.approx(roc_auc_score(labels.ravel(), probs.ravel()))
    assert m["f1_macro"] == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0))
    assert m["precision_macro"] == pytest.approx(
        precision_score(labels, pred, average="macro", zero_division=0)
    )
    # sensitivity of a finding without positives is undefined and left out, like its AUC
    recalls = [recall_score(labels[:, j], pred[:, j]) for j in defined]
    assert m["recall_macro"] == pytest.approx(np.mean(recalls)) == m["sensitivity_macro"]
    assert m["accuracy"] == pytest.approx((labels == pred).mean())
    assert m["subset_accuracy"] == pytest.approx((labels == pred).all(1).mean())
    spec = [recall_score(1 - labels[:, j], 1 - pred[:, j]) for j in range(c)]
    assert m["specificity_macro"] == pytest.approx(np.mean(spec))
    tn = ((labels == 0) & (pred == 0)).sum()
    assert m["specificity_micro"] == pytest.approx(tn / (labels == 0).sum())
    for j, name in enumerate(names):
        assert m[f"support/{name}"] == labels[:, j].sum()
        if j != 3:
            assert m[f"sensitivity/{name}"] == pytest.approx(recall_score(labels[:, j], pred[:, j]))
        assert m[f"specificity/{name}"] == pytest.approx(spec[j])
        assert m[f"f1/{name}"] == pytest.approx(f1_score(labels[:, j], pred[:, j], zero_division=0))
    assert list(m) == metric_keys(names)


def test_compute_metrics_names_default_to_column_numbers():
    rng = np.random.default_rng(3)
    labels = (rng.random((50, 2)) < 0.4).astype(int)
    m = compute_metrics(rng.normal(size=(50, 2)), labels)
    assert "auc/0" in m and "auc/1" in m


def test_binary_task_metrics_equal_sklearn():
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.3).astype(int)
    logit = rng.normal(size=300) + 2 * y
    task = BinaryTask(["normal", "pneumonia"])
    m = task.metrics(task.probabilities(logit[:, None]), y[:, None])
    p = sigmoid(logit)
    assert m["roc_auc_macro"] == pytest.approx(roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(((p >= 0.5) == y).mean())
    assert m["sensitivity/pneumonia"] == pytest.approx(recall_score(y, p >= 0.5))
    assert m["specificity/pneumonia"] == pytest.approx(recall_score(1 - y, p < 0.5))
    assert m["f1_macro"] == pytest.approx(f1_score(y, p >= 0.5))
    assert m["precision_macro"] == pytest.approx(precision_score(y, p >= 0.5))
    assert m["support/pneumonia"] == y.sum()
    assert set(m) == set(task.metric_names)
    assert "roc_auc_micro" not in m and "subset_accuracy" not in m  # one output: no extras


def test_multiclass_task_metrics_equal_sklearn():
    rng = np.random.default_rng(5)
    y = rng.choice(3, size=400, p=[0.5, 0.4, 0.1])
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), y] += 1.5
    names = ["normal", "benign", "malignant"]
    task = MultiClassTask(names)
    m = task.metrics(task.probabilities(logits), y)
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
    assert set(m) == set(task.metric_names)


def test_point_estimate_is_the_replicate_with_unit_weights():
    rng = np.random.default_rng(6)
    y = (rng.random((70, 3)) < 0.35).astype(float)
    probs = np.clip(0.5 * y + 0.6 * rng.random((70, 3)), 0, 1)
    task = MultiLabelTask(["a", "b", "c"])
    cut = {"a": 0.3, "b": 0.5, "c": 0.7}
    point = task.metrics(probs, y, cut)
    unit = task.metrics(probs, y, cut, weights=np.ones((1, 70)))
    assert point.keys() == unit.keys()
    for key, value in point.items():
        assert value == unit[key][0] or (np.isnan(value) and np.isnan(unit[key][0])), key
    ci = confidence_intervals(lambda w: task.metrics(probs, y, cut, w), 70, n_boot=50)
    assert {k: v["value"] for k, v in ci.items()} == pytest.approx(point, nan_ok=True)


def test_weighted_metrics_equal_sklearn_with_sample_weight_and_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = (rng.random(60) < 0.4).astype(float)
    weights = rng.integers(0, 4, size=(5, 60)).astype(float)
    got = weighted_auc(scores, labels, weights)
    decided = (scores >= 0.5).astype(float)
    reps = metric_replicates(scores[:, None], labels[:, None], decided[:, None], ["f"], weights)
    for b in range(5):
        w = weights[b]
        assert got[b] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w))
        assert reps["f1/f"][b] == pytest.approx(f1_score(labels, decided, sample_weight=w))
        assert reps["sensitivity/f"][b] == pytest.approx(
            recall_score(labels, decided, sample_weight=w)
        )


def test_patient_resampling_keeps_a_patients_scans_together():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    w = replicate_weights(groups, 6, 200, seed=0)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])
    # each replicate draws as many patients as there are
    assert np.all(w[:, [0, 2, 3]].sum(1) == 3)


def _binormal(rng, n, prevalence, d):
    y = (rng.random(n) < prevalence).astype(float)
    return rng.normal(d * y, 1.0), y


def _auc_ci(scores, y, groups, n_boot, seed):
    task = MultiLabelTask(["f"])
    n = len(y)
    ci = confidence_intervals(
        lambda w: task.metrics(scores[:, None], y[:, None], None, w), n, groups, n_boot, 0.95, seed
    )
    return ci["auc/f"]


def test_auc_ci_covers_the_large_sample_auc_about_95_percent():
    """200 small test sets of fixed synthetic scores; the truth is the AUC of a huge set."""
    d = 1.2
    big_scores, big_y = _binormal(np.random.default_rng(123), 400_000, 0.3, d)
    truth = roc_auc_score(big_y, big_scores)
    assert truth == pytest.approx(norm.cdf(d / np.sqrt(2)), abs=2e-3)
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        s, y = _binormal(rng, 120, 0.3, d)
        m = _auc_ci(sigmoid(s), y, None, 400, trial)
        covered += m["lo"] <= truth <= m["hi"]
    assert 0.90 <= covered / 200 <= 0.99


def test_patient_bootstrap_covers_with_correlated_scans():
    """Three scans per patient share the patient's label and a patient effect: resampling
    patients keeps the CI honest (resampling scans would treat them as independent)."""
    d = 1.0
    rng = np.random.default_rng(11)
    big_y = (rng.random(100_000) < 0.3).astype(float)
    big = rng.normal(d * big_y, 1.0)[:, None] + rng.normal(0, 1.0, (100_000, 3))
    truth = roc_auc_score(np.repeat(big_y, 3), big.ravel())
    covered = 0
    for trial in range(150):
        y = (rng.random(50) < 0.3).astype(float)
        s = rng.normal(d * y, 1.0)[:, None] + rng.normal(0, 1.0, (50, 3))
        groups = np.repeat(np.arange(50), 3)
        m = _auc_ci(sigmoid(s.reshape(-1)), np.repeat(y, 3), groups, 400, trial)
        covered += m["lo"] <= truth <= m["hi"]
    assert 0.88 <= covered / 150 <= 0.99


def test_unknown_labels_are_left_out_of_every_metric_of_their_finding():
    """Each finding's metrics equal scikit-learn's on its known cells only; the bootstrap
    replicates leave them out likewise."""
    rng = np.random.default_rng(4)
    n, c = 150, 3
    labels = (rng.random((n, c)) < [0.2, 0.4, 0.5]).astype(float)
    probs = sigmoid(rng.normal(size=(n, c)) + 1.5 * labels)
    decided = (probs >= 0.5).astype(float)
    truth = labels.copy()
    truth[rng.random((n, c)) < [0.1, 0.3, 0.5]] = np.nan
    names = ["a", "b", "c"]
    got = MultiLabelTask(names, missing="ignore").metrics(probs, truth)
    known = ~np.isnan(truth)
    for j, name in enumerate(names):
        y, p, d = truth[known[:, j], j], probs[known[:, j], j], decided[known[:, j], j]
        assert got[f"auc/{name}"] == pytest.approx(roc_auc_score(y, p))
        assert got[f"f1/{name}"] == pytest.approx(f1_score(y, d))
        assert got[f"precision/{name}"] == pytest.approx(precision_score(y, d))
        assert got[f"sensitivity/{name}"] == pytest.approx(recall_score(y, d))
        assert got[f"specificity/{name}"] == pytest.approx(recall_score(y, d, pos_label=0))
        assert got[f"support/{name}"] == y.sum()
    assert got["roc_auc_micro"] == pytest.approx(roc_auc_score(truth[known], probs[known]))
    assert got["accuracy"] == pytest.approx(np.mean(truth[known] == decided[known]))
    # a bootstrap replicate: the same as scikit-learn with the drawn counts as sample weights
    w = replicate_weights(None, n, 1, seed=3)
    rep = metric_replicates(probs, truth, decided, names, w)
    for j, name in enumerate(names):
        k = known[:, j]
        ref = roc_auc_score(truth[k, j], probs[k, j], sample_weight=w[0, k])
        assert rep[f"auc/{name}"][0] == pytest.approx(ref)
