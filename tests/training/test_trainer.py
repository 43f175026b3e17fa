"""The training loop: accumulation equals a big batch; a run leaves the promised files."""

from __future__ import annotations

import copy
import csv
import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from src.config import config_from_dict
from src.data.loaders import build_dataset, evaluation_loader
from src.data.phantom import FINDINGS
from src.data.splits import prepare_splits
from src.data.stream import EpochStream
from src.training.loop import train_epoch
from src.training.state import TrainingState
from src.training.tasks import MultiLabelTask, build_task
from src.training.trainer import fit, main, parse_args, train_model
from src.training.utils import CHECKPOINT_FORMAT, load_checkpoint
from tests.conftest import tiny_raw_config


def batches(x, y, size):
    return [{"image": x[i : i + size], "label": y[i : i + size]} for i in range(0, len(x), size)]


def run_epoch(model, loader, accumulate):
    cfg = config_from_dict(
        {"data": {"csv": "x", "image_root": ".", "label_columns": ["a", "b", "c"]}}
    )
    cfg.train.accumulate = accumulate
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = TrainingState(cfg, model, opt, sched, scaler, torch.device("cpu"))
    train_epoch(state, loader, MultiLabelTask(["a", "b", "c"]))
    assert state.step == sched.last_epoch
    return state.step  # optimizer steps taken


@pytest.mark.parametrize(("k", "b"), [(2, 4), (4, 3), (3, 5)])
def test_accumulation_equals_one_big_batch(k, b):
    torch.manual_seed(0)
    x, y = torch.randn(k * b, 1, 2, 2, 2), (torch.rand(k * b, 3) < 0.4).float()
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    twin = copy.deepcopy(model)
    assert run_epoch(model, batches(x, y, b), accumulate=k) == 1
    assert run_epoch(twin, batches(x, y, k * b), accumulate=1) == 1
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_last_partial_group_still_steps():
    x, y = torch.randn(10, 1, 2, 2, 2), (torch.rand(10, 3) < 0.5).float()
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    assert run_epoch(model, batches(x, y, 2), accumulate=2) == 3  # groups of 2, 2, 1 batches


def test_fit_writes_run_folder(tiny_config, tmp_path):
    cfg, _ = tiny_config
    run = tmp_path / "run"
    summary = fit(cfg, run)
    for name in ("config.yaml", "splits.json", "metrics.csv"):
        assert (run / name).is_file()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + cfg.train.epochs
    header = rows[0].split(",")
    for key in (
        "val/roc_auc_macro",
        "val/roc_auc_micro",
        "val/f1_macro",
        "val/specificity_macro",
        "val/auc/Lung nodule",
        "val/specificity/Emphysema",
        "train/loss",
        "val/loss",
    ):
        assert key in header
    ckpt = load_checkpoint(run / "checkpoints" / "final.pt")
    assert ckpt["format_version"] == CHECKPOINT_FORMAT
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "step",
        "early_stopping",
        "best_value",
        "rng",
        "config",
        "class_names",
        "wandb_run_id",
    ):
        assert key in ckpt
    assert ckpt["epoch"] == cfg.train.epochs
    assert (run / "checkpoints" / "best.pt").is_file() and (
        run / "checkpoints" / "last.pt"
    ).is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == cfg.train.epochs
    assert summary["best_epoch"] >= 1


def test_resume_without_checkpoint_is_one_clear_error(tiny_config, capsys):
    _, path = tiny_config
    assert main(["--config", str(path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume: no run of") and "\n" not in err


def test_bad_config_value_is_one_line_naming_the_key(tiny_config, capsys):
    _, path = tiny_config
    assert main(["--config", str(path), "--set", "optim.lr=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: optim.lr: must be positive, got -1.0"


def test_repeated_set_flags_all_apply():
    # `--set a=1 --set b=2` once kept only b=2 (argparse's default "store" action), silently.
    args = parse_args(["--config", "c.yaml", "--set", "a=1", "b=2", "--set", "c=3"])
    assert args.set == ["a=1", "b=2", "c=3"]


def test_resume_with_changed_model_is_refused(tiny_config, capsys):
    _, path = tiny_config
    assert main(["--config", str(path), "--set", "train.epochs=1", "logging.run_name=r"]) == 0
    code = main(
        ["--config", str(path), "--resume", "--set", "logging.run_name=r", "model.params.depth=18"]
    )
    assert code == 2
    assert "model.params: the run at" in capsys.readouterr().err


def test_resume_extends_a_finished_run(tiny_config):
    cfg, path = tiny_config
    assert main(["--config", str(path), "--set", "train.epochs=1", "logging.run_name=x"]) == 0
    code = main(
        ["--config", str(path), "--resume", "--set", "train.epochs=2", "logging.run_name=x"]
    )
    assert code == 0
    final = load_checkpoint(f"{cfg.logging.output_dir}/x/checkpoints/final.pt")
    assert final["epoch"] == 2 and len(final["history"]) == 2


def test_last_training_batch_of_one_is_dropped(tiny_config, tmp_path):
    cfg, _ = tiny_config
    parts = prepare_splits(cfg, tmp_path, reuse=False, task=build_task(cfg), progress=False)
    cfg.train.batch_size = len(parts["train"]) - 1  # leaves a last batch of one sample
    stream = EpochStream(build_dataset(parts["train"], cfg, True, False), cfg, lambda e: e, 0, 1)
    assert [len(b["image"]) for b in stream.epoch(0)] == [cfg.train.batch_size]
    val = evaluation_loader(parts["train"], cfg)
    assert sum(len(b["image"]) for b in val) == len(parts["train"])  # evaluation keeps all


def test_fit_reads_in_one_screen_and_train_epoch_takes_five_parameters():
    """The loop stays readable top to bottom: what grows goes into a named helper."""
    assert len(inspect.getsource(fit).splitlines()) <= 60
    assert len(inspect.signature(train_epoch).parameters) <= 5


def test_a_run_on_incomplete_labels_masks_them_and_reports_them(tiny_phantom, tmp_path):
    """Blank and -1 cells train, evaluate and report: thresholds, figures and the report
    work on the known labels, predictions.csv leaves the unknown truth blank, and metrics.json
    and report.md count the ignored cells per finding."""
    rows = list(csv.DictReader((tiny_phantom / "labels.csv").read_text().splitlines()))
    for i, row in enumerate(rows):
        row["Lung nodule"] = "" if i % 3 == 0 else row["Lung nodule"]
        row["Emphysema"] = "-1" if i % 3 == 1 else row["Emphysema"]
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    raw = tiny_raw_config(tiny_phantom, tmp_path)
    raw["data"] |= {"csv": str(table), "missing_labels": "ignore", "uncertain_labels": "ignore"}
    raw["train"]["epochs"] = 1
    summary = train_model(config_from_dict(raw), tmp_path / "run")
    evaluation = summary["evaluation"]
    n_val = evaluation["n_scans"]
    val = json.loads((tmp_path / "run" / "splits.json").read_text())["val"]
    unknown = {n: sum(r[n] in ("", "-1") for r in rows if r["image"] in val) for n in FINDINGS}
    ignored = evaluation["ignored_labels"]
    assert ignored == unknown and unknown["Lung nodule"] > 0
    text = (Path(evaluation["folder"]) / "predictions.csv").read_text()
    predictions = list(csv.DictReader(text.splitlines()))
    assert len(predictions) == n_val
    assert sum(p["true/Lung nodule"] == "" for p in predictions) == ignored["Lung nodule"]
    assert "ignored Lung nodule" in (tmp_path / "run" / "report.md").read_text()
