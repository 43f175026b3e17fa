"""Decision thresholds: Youden's J and target sensitivity agree with a brute-force search."""

from __future__ import annotations

import numpy as np
import pytest

from src.config import ConfigError, config_from_dict
from src.reporting.thresholds import (
    choose_thresholds,
    rule_summary,
    sensitivity_threshold,
    youden_threshold,
)
from src.training.tasks import build_task


def _data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.3 * y)))
    return y, s


def _sens_spec(y, s, t):
    pred = s >= t
    return pred[y == 1].mean(), (~pred)[y == 0].mean()


def test_youden_maximises_sensitivity_plus_specificity():
    y, s = _data()
    t = youden_threshold(y, s)
    best = max(sum(_sens_spec(y, s, c)) - 1 for c in np.unique(s))
    assert sum(_sens_spec(y, s, t)) - 1 == pytest.approx(best)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_target_sensitivity_is_the_highest_threshold_reaching_it(target):
    y, s = _data(1)
    t = sensitivity_threshold(y, s, target)
    assert _sens_spec(y, s, t)[0] >= target
    higher = np.unique(s[s > t])
    assert len(higher) == 0 or _sens_spec(y, s, higher[0])[0] < target


def _cfg(tmp_path, **evaluation):
    return config_from_dict(
        {
            "data": {"csv": "x.csv", "image_root": str(tmp_path), "label_columns": ["a", "b"]},
            "evaluation": evaluation,
        }
    )


def test_rules_per_class_and_single_valued_class(tmp_path):
    cfg = _cfg(tmp_path, sensitivity_targets={"a": 0.9})
    y, s = _data(2)
    labels = np.c_[y, np.zeros_like(y)]  # class b: no positives on validation
    out = choose_thresholds(np.c_[s, s], labels, build_task(cfg), cfg.evaluation)
    assert out["classes"]["a"]["rule"] == "sensitivity>=0.9"
    assert out["classes"]["a"]["threshold"] == pytest.approx(sensitivity_threshold(y, s, 0.9))
    assert out["classes"]["b"] == {"threshold": 0.5, "rule": "fixed 0.5 (one label value in val)"}
    assert "sensitivity>=0.9" in rule_summary(out) and "val split" in rule_summary(out)


def test_an_arg_max_task_takes_no_thresholds(tmp_path):
    raw = {"csv": "x.csv", "image_root": str(tmp_path), "task": "multiclass"}
    raw |= {"label_columns": ["y"], "class_names": ["a", "b", "c"]}
    cfg = config_from_dict({"data": raw})
    probs = np.random.default_rng(0).dirichlet(np.ones(3), 20)
    out = choose_thresholds(probs, np.eye(3)[np.arange(20) % 3], build_task(cfg), cfg.evaluation)
    assert out["classes"] == {} and "arg-max" in rule_summary(out)


def test_unknown_class_in_sensitivity_targets_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^evaluation.sensitivity_targets.zz: not a class"):
        _cfg(tmp_path, sensitivity_targets={"zz": 0.9})
    with pytest.raises(ConfigError, match=r"^evaluation.sensitivity_targets.a: target"):
        _cfg(tmp_path, sensitivity_targets={"a": 1.5})


def test_unknown_labels_take_no_part_in_choosing_a_threshold():
    y, s = _data(2)
    truth = y.astype(float)
    truth[::4] = np.nan
    data = {"csv": "x.csv", "image_root": ".", "label_columns": ["a"], "missing_labels": "ignore"}
    cfg = config_from_dict({"data": data})
    got = choose_thresholds(s[:, None], truth[:, None], build_task(cfg), cfg.evaluation)
    known = ~np.isnan(truth)
    assert got["classes"]["a"]["threshold"] == youden_threshold(y[known], s[known])
