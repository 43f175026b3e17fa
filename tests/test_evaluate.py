"""Evaluation of a finished run: metrics match scikit-learn, the report is self-contained."""

from __future__ import annotations

import csv
import json
import re
import warnings

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from src import evaluate
from src.config import load_config
from src.evaluate import main
from src.reporting.thresholds import load_thresholds


def test_trainer_writes_a_self_contained_report(tiny_run):
    html = (tiny_run / "report.html").read_text()
    md = (tiny_run / "report.md").read_text()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)  # base64 holds '/'
    assert not re.search(r"(?i)(https?:|ftp:|//|<link|<script|<iframe|url\(|@import)", text)
    sources = re.findall(r'src="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    named = re.findall(r'data-figure="([^"]+)"', html)
    assert len(named) == len(sources)
    for rel in named:  # every figure the report names exists and is the embedded one
        assert (tiny_run / rel).is_file(), rel
        assert f"({rel})" in md
    for fig in ("roc.png", "pr.png", "calibration.png", "confusion.png"):
        assert f"eval-test/{fig}" in named
    for fig in ("loss_curve.png", "metric_curve.png", "recall_curve.png"):
        assert fig in named  # the run folder's own curves
    assert any("gradcam_" in rel for rel in named)
    assert "thresholds chosen on the val split by:" in html and "youden" in html
    assert "| test | all |" in md  # split statistics table


def test_evaluate_cli_metrics_match_sklearn_on_its_predictions(tiny_run, capsys):
    assert (
        main(
            [
                "--run",
                str(tiny_run),
                "--split",
                "val",
                "--set",
                "evaluation.bootstrap=100",
                "evaluation.gradcam_per_group=0",
            ]
        )
        == 0
    )
    assert "roc_auc_macro" in capsys.readouterr().out
    out = tiny_run / "eval-val"
    summary = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    names = summary["thresholds"]["classes"]
    for name in names:
        y = np.array([int(r[f"true/{name}"]) for r in rows])
        p = np.array([float(r[f"prob/{name}"]) for r in rows])
        tuned = summary["metrics"]["validation_thresholds"]
        got = tuned[f"auc/{name}"]
        if len(np.unique(y)) == 2:
            assert got["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-5)
            assert got["lo"] <= got["value"] <= got["hi"]
        t = names[name]["threshold"]
        pred = (p >= t - 1e-6).astype(int)
        assert [int(r[f"pred/{name}"]) for r in rows] == pred.tolist()
        if y.sum():
            assert tuned[f"sensitivity/{name}"]["value"] == pytest.approx(recall_score(y, pred))
        at_half = summary["metrics"]["default"][f"sensitivity/{name}"]["value"]
        if y.sum():
            assert at_half == pytest.approx(recall_score(y, p >= 0.5), abs=1e-6)
    assert summary["decisions"]["default"] == "probability >= 0.5 per output"
    assert "chosen on the val split" in summary["decisions"]["validation_thresholds"]
    assert load_thresholds(tiny_run)["source"] == "val"


def test_evaluate_names_a_missing_split_and_checkpoint(tiny_run, capsys):
    assert main(["--run", str(tiny_run), "--checkpoint", "nope.pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --checkpoint: nope.pt not found") and "\n" not in err


def test_report_failure_only_warns(tiny_run, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(evaluate, "evaluate_run", broken)
    cfg = load_config(tiny_run / "config.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluate.evaluate_after_training(cfg, tiny_run) is None
    assert any("run evaluation not written (OSError: disk full)" in str(w.message) for w in caught)


def test_evaluate_reopens_wandb_with_the_runs_own_settings(tiny_run, monkeypatch):
    """The tracker gets the run's config (its evaluation.* included) plus the --set overrides,
    not the defaults."""
    seen = []
    monkeypatch.setattr(evaluate, "reopen_tracker", lambda cfg, run_dir, run_id: seen.append(cfg))
    args = ["--run", str(tiny_run), "--split", "val", "--set", "logging.wandb.mode=offline"]
    assert evaluate.main([*args, "evaluation.seed=7"]) == 0
    (cfg,) = seen
    run_cfg = load_config(tiny_run / "config.yaml")
    assert run_cfg.evaluation.bootstrap == 200 != type(run_cfg.evaluation)().bootstrap
    assert cfg.evaluation.bootstrap == 200  # the run's own, not the default 1000
    assert cfg.evaluation.gradcam_per_group == run_cfg.evaluation.gradcam_per_group
    assert cfg.evaluation.seed == 7  # and the override
