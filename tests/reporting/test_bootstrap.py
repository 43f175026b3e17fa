"""Bootstrap CIs: weighted metrics equal scikit-learn's; 95 % CIs cover the true AUC ~95 %."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from src.reporting.bootstrap import metrics_with_ci, replicate_weights, weighted_auc


def test_weighted_auc_equals_sklearn_with_sample_weight_and_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = (rng.random(60) < 0.4).astype(float)
    weights = rng.integers(0, 4, size=(5, 60)).astype(float)
    got = weighted_auc(scores, labels, weights)
    for b in range(5):
        assert got[b] == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights[b]))


def test_point_metrics_equal_sklearn_at_the_given_thresholds():
    rng = np.random.default_rng(1)
    y = (rng.random((80, 3)) < 0.3).astype(float)
    p = np.clip(0.5 * y + 0.6 * rng.random((80, 3)), 0, 1)
    thr = np.array([0.3, 0.5, 0.7])
    m = metrics_with_ci(p, y, ["a", "b", "c"], thr, n_boot=0)
    pred = (p >= thr).astype(int)
    for j, name in enumerate("abc"):
        assert m[f"auc/{name}"]["value"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]))
        assert m[f"f1/{name}"]["value"] == pytest.approx(f1_score(y[:, j], pred[:, j]))
        assert m[f"precision/{name}"]["value"] == pytest.approx(
            precision_score(y[:, j], pred[:, j])
        )
        assert m[f"sensitivity/{name}"]["value"] == pytest.approx(recall_score(y[:, j], pred[:, j]))
        assert m[f"specificity/{name}"]["value"] == pytest.approx(
            recall_score(1 - y[:, j], 1 - pred[:, j])
        )
    assert m["accuracy"]["value"] == pytest.approx((pred == y).mean())


def test_multiclass_accuracy_and_one_vs_rest_auc():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = metrics_with_ci(p, y, ["x", "y", "z"], multiclass=True, n_boot=0)
    assert m["accuracy"]["value"] == pytest.approx((p.argmax(1) == y).mean())
    assert m["auc/y"]["value"] == pytest.approx(roc_auc_score(y == 1, p[:, 1]))
    onehot = metrics_with_ci(p, np.eye(3)[y], ["x", "y", "z"], multiclass=True, n_boot=0)
    assert {k: v["value"] for k, v in onehot.items()} == {k: v["value"] for k, v in m.items()}


def test_patient_resampling_keeps_a_patients_scans_together():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    w = replicate_weights(groups, 6, 200, seed=0)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])
    # each replicate draws as many patients as there are
    assert np.all(w[:, [0, 2, 3]].sum(1) == 3)


def _binormal(rng, n, prevalence, d):
    y = (rng.random(n) < prevalence).astype(float)
    return rng.normal(d * y, 1.0), y


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
        m = metrics_with_ci(s[:, None], y[:, None], ["f"], n_boot=400, seed=trial)["auc/f"]
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
        m = metrics_with_ci(
            s.reshape(-1, 1),
            np.repeat(y, 3)[:, None],
            ["f"],
            groups=groups,
            n_boot=400,
            seed=trial,
        )["auc/f"]
        covered += m["lo"] <= truth <= m["hi"]
    assert 0.88 <= covered / 150 <= 0.99
