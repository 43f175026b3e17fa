"""Bad input a real data set or config produces: each case is one ``error:`` line from ``main()``
that names the file, CSV row or config key, no traceback, and no training time spent."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from src.training.trainer import main

N_PATIENTS = 12  # p0..p7 train, p8..p11 val (from the split column)
LABELS = ["a", "b"]


class Case:
    """A tiny valid data set and config in ``tmp``; a case breaks one thing, then runs main()."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "images"
        self.root.mkdir()
        rng = np.random.default_rng(0)
        self.rows = []
        for i in range(N_PATIENTS):
            name = f"p{i}.nii.gz"
            self.write_volume(name, rng.integers(-1000, 400, (10, 10, 8)).astype(np.int16))
            self.rows.append(
                {
                    "image": name,
                    "a": str(i % 2),
                    "b": str((i // 2) % 2),
                    "patient_id": f"p{i}",
                    "split": "train" if i < 8 else "val",
                }
            )
        self.raw = {
            "data": {
                "csv": str(tmp / "labels.csv"),
                "image_root": str(self.root),
                "label_columns": list(LABELS),
                "spatial_size": [8, 8, 8],
                "orientation": "",
                "cache": "none",
                "cache_dir": str(tmp / "cache"),
            },
            "model": {"name": "resnet3d", "params": {"depth": 10, "widths": [4, 4, 4, 4]}},
            "optim": {"warmup_epochs": 0},
            "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "threads": 1},
            "logging": {
                "output_dir": str(tmp / "runs"),
                "run_name": "r",
                "progress": False,
                "wandb": {"mode": "disabled"},
            },
        }
        self.config = tmp / "config.yaml"
        self.extra: list[str] = []
        self.config_text: str | None = None

    def write_volume(self, name: str, data: np.ndarray) -> Path:
        path = self.root / name
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), path)
        return path

    def image(self, i: int) -> Path:
        return self.root / self.rows[i]["image"]

    def run(self, capsys, *argv: str) -> tuple[int, str, str]:
        with open(self.tmp / "labels.csv", "w", newline="") as fh:
            columns = list(dict.fromkeys(k for r in self.rows for k in r))
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        self.config.write_text(self.config_text or yaml.safe_dump(self.raw))
        code = main(["--config", str(self.config), *argv, *self.extra])
        out, err = capsys.readouterr()
        return code, out, err


# ---- the ways to break the data or config: each edits a valid Case ----------------------------


def truncate(c: Case, i: int) -> None:
    data = c.image(i).read_bytes()
    c.image(i).write_bytes(data[: len(data) // 2])


def with_nans(n: int) -> np.ndarray:
    volume = np.random.default_rng(1).normal(size=(10, 10, 8)).astype(np.float32)
    volume.reshape(-1)[:n] = np.nan
    return volume


def set_label(value: str):
    return lambda c: c.rows[2].update(b=value)


def set_raw(key: str, value):
    def edit(c: Case) -> None:
        node = c.raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return edit


def two_scans_of_one_patient_in_train_and_val(c: Case) -> None:
    c.rows[9]["patient_id"] = "p1"


def resumed_with_corrupt_checkpoint(c: Case) -> None:
    ckpt = c.tmp / "runs" / "r" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"format_version": 1, "model": {}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    c.extra = ["--resume"]


def resume_with_another_model(c: Case, capsys) -> None:
    assert c.run(capsys)[0] == 0  # a finished 1-epoch run
    c.raw["model"]["params"]["depth"] = 18
    c.extra = ["--resume"]


# (id, edit of the Case, extra argv, substrings the one error line must contain)
CASES = [
    ("missing-image", lambda c: c.image(3).unlink(), [], ["labels.csv row 5", "not found"]),
    ("empty-nifti", lambda c: c.image(3).write_bytes(b""), [], ["row 5", "p3.nii.gz", "empty"]),
    ("truncated-nifti", lambda c: truncate(c, 4), [], ["row 6", "p4.nii.gz", "truncated"]),
    (
        "not-nifti",
        lambda c: c.image(5).write_bytes(gzip.compress(b"name,age\nx,1\n")),
        [],
        ["row 7", "p5.nii.gz", "not a readable NIfTI"],
    ),
    (
        "text-not-gzip",
        lambda c: c.image(5).write_text("hello"),
        [],
        ["row 7", "not a readable NIfTI", "not a gzip file"],
    ),
    (
        "4d-volume",
        lambda c: c.write_volume("p1.nii.gz", np.ones((10, 10, 8, 3), np.int16)),
        [],
        ["row 3", "p1.nii.gz", "a 4D image where a 3D one is expected"],
    ),
    (
        "nan-voxels",
        lambda c: c.write_volume("p2.nii.gz", with_nans(5)),
        [],
        ["row 4", "p2.nii.gz", "has 5 NaN or infinite voxels of 800"],
    ),
    (
        "inf-voxels",
        lambda c: c.write_volume("p2.nii.gz", np.full((10, 10, 8), np.inf, np.float32)),
        [],
        ["row 4", "NaN or infinite voxels"],
    ),
    (
        "constant-volume",
        lambda c: c.write_volume("p6.nii.gz", np.full((10, 10, 8), -1024, np.int16)),
        [],
        ["row 8", "p6.nii.gz", "constant (every voxel = -1024)"],
    ),
    ("label-2", set_label("2"), [], ["row 4, column 'b'", "must be 0 or 1, got '2'"]),
    ("label-minus-1", set_label("-1"), [], ["row 4, column 'b'", "got '-1'"]),
    ("label-yes", set_label("yes"), [], ["row 4, column 'b'", "got 'yes'"]),
    ("label-blank", set_label(""), [], ["row 4, column 'b'", "blank cell"]),
    (
        "label-column-missing",
        lambda c: [r.pop("b") for r in c.rows],
        [],
        ["labels.csv", "column 'b' is missing"],
    ),
    (
        "image-column-missing",
        set_raw("data.image_column", "VolumeName"),
        [],
        ["column 'VolumeName' is missing"],
    ),
    ("image-cell-empty", lambda c: c.rows[4].update(image=""), [], ["row 6", "is empty"]),
    (
        "duplicate-row",
        lambda c: c.rows.append(dict(c.rows[1])),
        [],
        ["row 14", "'p1.nii.gz' is listed twice (first at row 3)"],
    ),
    (
        "patient-in-two-splits",
        two_scans_of_one_patient_in_train_and_val,
        [],
        ["patient 'p1' is in both the train and the val split", "p9.nii.gz"],
    ),
    (
        "empty-val-split",
        lambda c: [r.update(split="train") for r in c.rows],
        [],
        ["the val split is empty"],
    ),
    (
        "unknown-split-value",
        lambda c: c.rows[10].update(split="holdout"),
        [],
        ["p10.nii.gz", "unknown value 'holdout'", "use train, val or test"],
    ),
    (
        "path-escapes-root",
        lambda c: c.rows[0].update(image="../labels.csv"),
        [],
        ["row 2", "'../labels.csv' leads outside data.image_root"],
    ),
    (
        "absolute-path-not-allowed",
        lambda c: c.rows[0].update(image=str(c.tmp / "elsewhere" / "p0.nii.gz")),
        [],
        ["row 2", "leads outside", "data.allow_absolute_paths"],
    ),
    ("csv-missing", set_raw("data.csv", "/nonexistent/labels.csv"), [], ["data.csv: file not"]),
    ("image-root-missing", set_raw("data.image_root", "/nonexistent"), [], ["data.image_root"]),
    ("csv-no-rows", lambda c: c.rows.clear(), [], ["labels.csv: the CSV has no data rows"]),
    (
        "yaml-syntax",
        lambda c: setattr(c, "config_text", "data:\n  csv: [unclosed\n"),
        [],
        ["config.yaml line", "YAML syntax error"],
    ),
    (
        "yaml-python-tag",
        lambda c: setattr(
            c, "config_text", "train:\n  epochs: !!python/object/apply:os.getpid []\n"
        ),
        [],
        ["config.yaml line 2", "YAML tag not allowed", "python/object/apply:os.getpid"],
    ),
    ("unknown-key", set_raw("train.epochz", 3), [], ["train.epochz: unknown key"]),
    ("wrong-type", set_raw("train.batch_size", "four"), [], ["train.batch_size: expected an"]),
    ("negative-lr", set_raw("optim.lr", -0.001), [], ["optim.lr: must be positive, got -0.001"]),
    (
        "bad-on-bad-sample",
        set_raw("data.on_bad_sample", "ignore"),
        [],
        ["data.on_bad_sample: expected one of 'error', 'skip'"],
    ),
    (
        "batch-larger-than-train",
        set_raw("train.batch_size", 64),
        [],
        ["train.batch_size: 64 is larger than the training split (8 images)"],
    ),
    ("unknown-model", set_raw("model.name", "resnet4d"), [], ["model.name: unknown model"]),
    (
        "unknown-model-param",
        set_raw("model.params.depht", 10),
        [],
        ["model.params.depht: resnet3d has no parameter"],
    ),
    (
        "spatial-size-2d-on-3d-volumes",
        lambda c: (set_raw("data.spatial_size", [8, 8])(c), set_raw("model.name", "resnet2d")(c)),
        [],
        ["data.spatial_size: [8, 8] has 2 sizes", "p0.nii.gz has shape (10, 10, 8)"],
    ),
    (
        "model-too-deep-for-the-input",
        lambda c: c.raw["model"].update(name="densenet3d", params={}),
        [],
        ["model.params / data.spatial_size: densenet3d", "needs at least", "conv1_stride"],
    ),
    (
        "monitor-not-logged",
        set_raw("train.monitor", "val/auroc"),
        [],
        ["train.monitor: 'val/auroc' is not a logged metric", "val/roc_auc_macro"],
    ),
    ("override-without-value", lambda c: None, ["--set", "train.epochs"], ["expected KEY=VALUE"]),
    ("resume-no-checkpoint", lambda c: None, ["--resume"], ["--resume: no checkpoint in"]),
    (
        "resume-torn-checkpoint",
        resumed_with_corrupt_checkpoint,
        [],
        ["last.pt: cannot be read as a checkpoint"],
    ),
    ("resume-changed-model", resume_with_another_model, [], ["model.params: the run at"]),
]


@pytest.mark.parametrize(
    ("edit", "argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, edit, argv, expected):
    case = Case(tmp_path)
    if edit is resume_with_another_model:
        edit(case, capsys)
    else:
        edit(case)
    before = set((tmp_path / "runs" / "r" / "checkpoints").glob("*"))
    code, _, err = case.run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0]
    # nothing was trained: no new checkpoint, no metrics
    assert set((tmp_path / "runs" / "r" / "checkpoints").glob("*")) == before
    if edit is not resume_with_another_model:
        assert not (tmp_path / "runs" / "r" / "metrics.csv").exists()


def test_case_count_meets_the_issue():
    assert len(CASES) >= 30


def test_skip_mode_drops_bad_images_and_counts_them(tmp_path, capsys):
    """on_bad_sample: skip trains on the rest and says how many were skipped, naming each; a
    finding with no positive in training is a one-line warning, not an error."""
    case = Case(tmp_path)
    case.image(1).write_bytes(b"")
    truncate(case, 2)
    case.write_volume("p3.nii.gz", np.full((10, 10, 8), np.nan, np.float32))
    for r in case.rows[:8]:
        r["b"] = "0"  # finding b never positive in training
    case.raw["data"]["on_bad_sample"] = "skip"
    case.raw["train"]["batch_size"] = 5  # no batch of 1: BatchNorm on a 1-voxel map fails
    code, _, err = case.run(capsys)
    assert code == 0, err
    assert "data.on_bad_sample=skip: skipped 3 of 12 images" in err
    for name in ("p1.nii.gz", "p2.nii.gz", "p3.nii.gz"):
        assert any(name in line and line.startswith("skipped ") for line in err.splitlines())
    warning = [line for line in err.splitlines() if line.startswith("warning: no training image")]
    assert len(warning) == 1 and "labelled 'b' (0 of 5 images in the training split)" in warning[0]
    splits = yaml.safe_load((tmp_path / "runs" / "r" / "splits.json").read_text())
    assert len(splits["train"]) == 5 and "p1.nii.gz" not in splits["train"]
    assert "Traceback" not in err


def test_image_checks_are_remembered_per_file_version(tmp_path, capsys):
    """A second run reads no voxels for unchanged files; an edited file is checked again."""
    case = Case(tmp_path)
    case.raw["train"]["batch_size"] = 64  # stops right after the checks
    assert case.run(capsys)[0] == 2
    memo = tmp_path / "cache" / "image_checks.json"
    assert len(yaml.safe_load(memo.read_text())) == N_PATIENTS
    case.write_volume("p6.nii.gz", np.zeros((10, 10, 8), np.int16))
    os.utime(case.image(6), ns=(1, 2))  # a new version of the file
    case.raw["train"]["batch_size"] = 4
    code, _, err = case.run(capsys)
    assert code == 2 and "p6.nii.gz: is constant" in err
