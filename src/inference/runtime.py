"""Load a trained run for use after training: its config, model and checkpoint; predict.

Shared by evaluation, Grad-CAM, inference and export, so all of them see the model exactly as
the checkpoint describes it (config and class names are read from the checkpoint itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from src.config import Config, ConfigError, config_from_dict, parse_overrides
from src.data.loaders import build_dataset, build_loader
from src.data.records import DataError, read_records
from src.data.splits import load_splits, split_records
from src.models import ModelError, create_model
from src.training.run_names import find_checkpoint
from src.training.utils import (
    CHECKPOINT_NAMES,
    CheckpointError,
    load_checkpoint,
    load_model_state,
    resolve_device,
)

USER_ERRORS = (ConfigError, DataError, ModelError, CheckpointError)


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    model: nn.Module
    checkpoint: Path
    ckpt: dict[str, Any]
    device: torch.device


def resolve_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """``best``/``last``/``final`` inside ``run_dir/checkpoints``, or a checkpoint path."""
    if which.removesuffix(".pt") + ".pt" in CHECKPOINT_NAMES:
        kind = which.removesuffix(".pt")  # best.pt, or best_<strategy>.pt in a tagged run
        path = find_checkpoint(run_dir, kind) or Path(run_dir) / "checkpoints" / f"{kind}.pt"
    else:
        path = Path(which)
    if not path.is_file():
        raise CheckpointError(
            f"--checkpoint: {path} not found; give best, last, final or a checkpoint path "
            f"(is {run_dir} a run folder?)"
        )
    return path


def config_with_overrides(raw: dict[str, Any], overrides: list[str] | None) -> Config:
    """The checkpoint's config, with ``key=value`` overrides (evaluation.* and the like)."""
    for key, value in parse_overrides(overrides or []):
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{key}: {part} is not a section")
            node = node[part]
        node[leaf] = value
    return config_from_dict(raw)


def load_run(
    run_dir: str | Path, which: str = "best", overrides: list[str] | None = None
) -> LoadedRun:
    """Model (eval mode) and config of a run folder's checkpoint ``which``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--run: folder not found: {run_dir}")
    path = resolve_checkpoint(run_dir, which)
    ckpt = load_checkpoint(path)
    raw = ckpt["config"]
    raw.setdefault("evaluation", {})  # runs trained before evaluation settings existed
    cfg = config_with_overrides(raw, overrides)
    torch.set_num_threads(cfg.train.threads or max(1, os.cpu_count() or 1))
    device = resolve_device(cfg.train.device)
    num_outputs = 1 if cfg.data.task == "binary" else len(cfg.class_names)
    model = create_model(
        cfg.model.name, cfg.spatial_dims, 1, num_outputs, cfg.data.spatial_size, **cfg.model.params
    )
    load_model_state(model, ckpt["model"], str(path))
    return LoadedRun(run_dir, cfg, model.to(device).eval(), path, ckpt, device)


def run_splits(cfg: Config, run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Records of the run's own ``splits.json``. Unlike training, this never (re)generates
    the phantom: a finished run is evaluated on the data it was split from, as it is."""
    path = Path(run_dir) / "splits.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; is {run_dir} a run folder of the trainer?")
    records = read_records(cfg)
    if cfg.data.test_csv:
        records += read_records(cfg, cfg.data.test_csv, cfg.data.test_image_root or None)
    return split_records(records, load_splits(path), str(path))


def probabilities(logits: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Sigmoid per output (multi-label, binary) or softmax over classes (multi-class)."""
    if cfg.data.task == "multiclass":
        return torch.softmax(logits.float(), dim=1)
    return torch.sigmoid(logits.float())


def tta_axes(cfg: Config) -> list[int]:
    """Spatial axes flipped by test-time augmentation: the training flip axes, else axis 0."""
    return list(cfg.data.augment.flip_axes) or [0]


@torch.no_grad()
def predict_batch(
    model: nn.Module, x: torch.Tensor, cfg: Config, tta: bool = False
) -> torch.Tensor:
    """Probabilities of a batch; with ``tta`` the mean over the image and its flips."""
    probs = probabilities(model(x), cfg)
    if tta:
        axes = tta_axes(cfg)
        for ax in axes:
            probs += probabilities(model(torch.flip(x, dims=[ax + 2])), cfg)
        probs /= 1 + len(axes)
    return probs.cpu()


def predict_records(
    run: LoadedRun, records: list[dict[str, Any]], tta: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), labels) of ``records`` through the run's cached preprocessing."""
    cfg = run.cfg
    loader = build_loader(build_dataset(records, cfg, train=False, progress=False), cfg, False)
    probs, labels = [], []
    for batch in loader:
        probs.append(predict_batch(run.model, batch["image"].to(run.device), cfg, tta))
        labels.append(batch["label"])
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def one_hot_labels(labels: np.ndarray, cfg: Config, n_outputs: int) -> np.ndarray:
    """Labels as (N, C) 0/1: class indices are expanded for multi-class tasks."""
    if cfg.data.task == "multiclass":
        return np.eye(n_outputs)[np.asarray(labels).astype(int).reshape(-1)]
    return np.asarray(labels, np.float64).reshape(len(labels), n_outputs)
