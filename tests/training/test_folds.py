"""Cross-validation groups (``--folds all`` / ``--fold I``): out-of-fold predictions cover the
pool once, by the fold that did not train on it; folds started apart, and a group killed during
fold 2 and resumed, end with the files of one uninterrupted ``--folds all``."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from src.training.trainer import main
from tests.conftest import group_config

# the files that hold what a group computed (report pages carry their time of writing)
SAME = [
    "splits.json",
    "thresholds.json",
    "oof_predictions.csv",
    "eval-test/predictions.csv",
    *(f"fold_{k}/{name}" for k in range(3) for name in ("splits.json", "metrics.csv")),
]


def train(config: Path, *args: str) -> list[str]:
    return ["--config", str(config), *args, "--set", "logging.run_name=g"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_pool_scan_is_predicted_once_by_the_fold_that_did_not_train_on_it(tiny_group):
    group = tiny_group
    oof = rows(group / "oof_predictions.csv")
    ids = [r["id"] for r in oof]
    splits = json.loads((group / "splits.json").read_text())
    assert len(ids) == len(set(ids)) and set(ids) == set(splits["train"])  # the whole pool
    assert not set(ids) & set(splits["test"])  # the test split is held out of every fold
    folds = [json.loads((group / f"fold_{k}" / "splits.json").read_text()) for k in range(3)]
    for r in oof:
        fold = folds[int(r["fold"])]
        assert r["id"] in fold["val"] and r["id"] not in fold["train"]
        assert fold["test"] == splits["test"]
    oof_metrics = json.loads((group / "eval-oof" / "metrics.json").read_text())
    assert oof_metrics["n_scans"] == len(ids)
    assert json.loads((group / "thresholds.json").read_text())["source"] == "out-of-fold"
    for k in range(3):  # each fold: its fold of the split, one W&B run in the group's W&B group
        saved = yaml.safe_load((group / f"fold_{k}" / "config.yaml").read_text())
        assert saved["data"]["split"]["fold"] == k and saved["logging"]["wandb"]["group"] == "g-cv"
    report = (group / "report.md").read_text()
    assert "| metric | fold_0 | fold_1 | fold_2 | ensemble | out of fold |" in report
    assert "Out-of-fold ROC curves" in report


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while not (path.is_file() and len(path.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline, "fold 2 never started training"
        time.sleep(0.02)


def test_folds_started_apart_and_a_group_killed_in_fold_2_build_the_same_group(
    tiny_group, tiny_phantom, tmp_path
):
    group, config = tiny_group, group_config(tiny_phantom, tmp_path)
    assert main(train(config, "--fold", "1")) == 0  # folds started apart, in any order
    assert main(train(config, "--fold", "0")) == 0
    built = tmp_path / "runs" / "g-cv"
    assert not (built / "oof_predictions.csv").exists()  # fold 2 is still missing
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "src.training.trainer", *train(config, "--folds", "all")]
    proc = subprocess.Popen([*cmd, "--resume"], env=env, stdout=subprocess.DEVNULL)
    wait_for(built / "fold_2" / "metrics.csv", proc)  # fold 2's first epoch is written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (built / "fold_2" / "checkpoints" / "final_kfold2.pt").exists()
    assert main(train(config, "--folds", "all", "--resume")) == 0
    for name in SAME:
        assert (built / name).read_text() == (group / name).read_text(), name
    got = json.loads((built / "eval-test" / "metrics.json").read_text())
    want = json.loads((group / "eval-test" / "metrics.json").read_text())
    assert got["metrics"] == want["metrics"] and got["per_member"] == want["per_member"]
    listing = sorted(p.relative_to(group).as_posix() for p in group.rglob("*"))
    assert sorted(p.relative_to(built).as_posix() for p in built.rglob("*")) == listing


def test_a_fold_without_a_group_name_or_outside_the_folds_is_refused(tiny_config, capsys):
    _, config = tiny_config
    assert main(["--config", str(config), "--fold", "1"]) == 2
    assert "logging.run_name" in capsys.readouterr().err
    assert main(["--config", str(config), "--fold", "7", "--set", "logging.run_name=x"]) == 2
    assert "data.split.n_folds" in capsys.readouterr().err
