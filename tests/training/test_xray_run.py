"""configs/xray.yaml end to end on a tiny phantom: both split strategies in one output folder
leave their own run folders, strategy-named checkpoints, metrics with per-class recall, the two
curves; the centre-holdout test split holds only the held-out centre; --resume finds the run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from src.training.trainer import main
from src.training.utils import load_checkpoint

TINY = [
    "data.phantom.n_patients=30",
    "data.spatial_size=[32,32]",
    "data.cache=ram",
    "model.params={depth: 10, widths: [4, 8, 8, 8], conv1_kernel: 3}",
    "train.epochs=2",
    "train.batch_size=16",
    "train.num_workers=0",
    "train.threads=1",
    "logging.progress=false",
    "logging.wandb.mode=disabled",
]


@pytest.fixture(scope="module")
def xray_runs(tmp_path_factory):
    """Train both strategies of configs/xray.yaml on a 30-patient phantom; return the outputs."""
    tmp = tmp_path_factory.mktemp("xray")
    common = [
        f"data.csv={tmp / 'phantom' / 'labels.csv'}",
        f"data.image_root={tmp / 'phantom'}",
        f"data.cache_dir={tmp / 'cache'}",
        f"logging.output_dir={tmp / 'outputs'}",
        *TINY,
    ]
    for strategy in ("center_holdout", "stratified"):
        args = [
            "--config",
            "configs/xray.yaml",
            "--set",
            *common,
            f"data.split.strategy={strategy}",
        ]
        assert main(args) == 0
    return tmp, common


def run_of(tmp, tag):
    (run,) = (tmp / "outputs").glob(f"xray-{tag}-*")
    return run


@pytest.mark.parametrize("tag", ["center", "stratified"])
def test_each_strategy_leaves_its_own_run(xray_runs, tag):
    tmp, _ = xray_runs
    run = run_of(tmp, tag)
    names = sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    assert names == [f"best_{tag}.pt", f"final_{tag}.pt", f"last_{tag}.pt"]
    assert load_checkpoint(run / "checkpoints" / f"final_{tag}.pt")["epoch"] == 2
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for name in ("normal", "benign", "malignant"):
        assert 0 <= float(rows[-1][f"val/recall/{name}"]) <= 1
    for png in ("loss_curve.png", "metric_curve.png", "recall_curve.png"):
        image = Image.open(run / png)
        assert image.size == (600, 400) and np.asarray(image).std() > 0
    summary = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert summary["split"] == "test" and set(summary["metrics"]) == {
        "default",
        "validation_thresholds",
    }
    assert summary["decisions"]["default"] == "arg-max of the probabilities"


def test_center_holdout_test_split_is_the_held_out_centre(xray_runs):
    tmp, _ = xray_runs
    with open(tmp / "phantom" / "labels.csv", newline="") as fh:
        center = {r["image"]: r["center"] for r in csv.DictReader(fh)}
    splits = json.loads((run_of(tmp, "center") / "splits.json").read_text())
    assert splits["test"] and {center[i] for i in splits["test"]} == {"C"}
    assert "C" not in {center[i] for i in splits["train"] + splits["val"]}
    assert splits["test"] == [i for i, c in center.items() if c == "C"]


def test_resume_finds_the_strategy_run(xray_runs, capsys):
    _, common = xray_runs
    capsys.readouterr()
    args = ["--config", "configs/xray.yaml", "--resume", "--set", *common]
    assert main([*args, "data.split.strategy=center_holdout"]) == 0
    assert "last_center.pt" in capsys.readouterr().out
