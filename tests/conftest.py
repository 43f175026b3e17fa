"""Shared fixtures: a tiny phantom CT set (made once per session) and a config that trains on
it in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from src.config import Config, config_from_dict
from src.data.phantom import FINDINGS, generate_phantom_ct
from src.training.trainer import main, train_model

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory) -> Path:
    """12 patients (~20 scans) of phantom CT; returns the folder."""
    root = tmp_path_factory.mktemp("phantom") / "ct"
    generate_phantom_ct(root, n_patients=12, seed=3, progress=False)
    return root


@pytest.fixture(scope="session")
def dicom_phantom(tmp_path_factory) -> Path:
    """The first 2 patients of ``tiny_phantom`` (seed 3) written as DICOM series folders."""
    root = tmp_path_factory.mktemp("phantom") / "ct_dicom"
    generate_phantom_ct(root, n_patients=2, seed=3, progress=False, fmt="dicom")
    return root


def tiny_raw_config(root: Path, out: Path) -> dict:
    """A config dict that trains a very small 3D ResNet on the tiny phantom in seconds."""
    return {
        "data": {
            "csv": str(root / "labels.csv"),
            "image_root": str(root),
            "label_columns": list(FINDINGS),
            "spacing": [12.0, 12.0, 12.0],
            "spatial_size": [24, 24, 16],
            "cache": "ram",
            "cache_dir": str(out / "cache"),
            "split": {"val_fraction": 0.25, "test_fraction": 0.0, "seed": 0},
        },
        "model": {
            "name": "resnet3d",
            "params": {"depth": 10, "widths": [4, 8, 8, 8], "conv1_kernel": 3},
        },
        "optim": {"lr": 1.0e-3, "warmup_epochs": 0},
        "train": {"epochs": 2, "batch_size": 4, "num_workers": 0, "threads": 1, "patience": 5},
        "logging": {
            "output_dir": str(out / "runs"),
            "progress": False,
            "wandb": {"mode": "disabled"},
        },
        # every run ends with its report: keep it cheap (no Grad-CAM gallery, few replicates)
        "evaluation": {"bootstrap": 100, "gradcam_per_group": 0},
    }


@pytest.fixture
def tiny_config(tiny_phantom, tmp_path) -> tuple[Config, Path]:
    """(Config, path of the same config as YAML) for a seconds-long training run."""
    raw = tiny_raw_config(tiny_phantom, tmp_path)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return config_from_dict(raw), path


@pytest.fixture(scope="session")
def tiny_run(tiny_phantom, tmp_path_factory) -> Path:
    """A finished tiny training run with a test split (and its report); returns the folder."""

    out = tmp_path_factory.mktemp("tiny_run")
    raw = tiny_raw_config(tiny_phantom, out)
    raw["data"]["split"] |= {"test_fraction": 0.25}
    raw["evaluation"] |= {"bootstrap": 200, "gradcam_per_group": 1}
    run = out / "run"
    train_model(config_from_dict(raw), run)
    return run


def group_config(root: Path, out: Path) -> Path:
    """A YAML config of a three-fold cross-validation group on the tiny phantom."""
    raw = tiny_raw_config(root, out)
    raw["data"]["split"] |= {"n_folds": 3, "test_fraction": 0.25}
    raw["evaluation"]["bootstrap"] = 20
    path = out / "cv.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def tiny_group(tiny_phantom, tmp_path_factory) -> Path:
    """An uninterrupted ``--folds all`` group (three folds, two epochs each); the folder."""
    out = tmp_path_factory.mktemp("cv")
    config = group_config(tiny_phantom, out)
    assert main(["--config", str(config), "--folds", "all", "--set", "logging.run_name=g"]) == 0
    return out / "runs" / "g-cv"
