"""A trained run loaded for use after training: its config, task, model and checkpoint, and
the outcomes of a split (probabilities, truth and decisions).

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

from src.config import Config, ConfigError, apply_overrides, config_from_dict
from src.data.loaders import evaluation_loader
from src.data.records import DataError
from src.data.splits import run_splits
from src.models import ModelError, create_model
from src.reporting.thresholds import (
    choose_thresholds,
    load_thresholds,
    save_thresholds,
    threshold_values,
)
from src.training.devices import resolve_device
from src.training.loop import predict
from src.training.tasks import Flip, Task, build_task
from src.training.utils import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    resolve_checkpoint,
)

USER_ERRORS = (ConfigError, DataError, ModelError, CheckpointError)


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    task: Task
    model: nn.Module
    checkpoint: Path
    ckpt: dict[str, Any]
    device: torch.device

    def flips(self, tta: bool) -> list[Flip]:
        """The test-time flips of ``--tta``: those training used (none if it did not flip)."""
        return self.task.flips if tta else []


def load_run(
    run_dir: str | Path, which: str = "best", overrides: list[str] | None = None
) -> LoadedRun:
    """Model (eval mode), config and task of a run folder's checkpoint ``which`` (``best``,
    ``last``, ``final`` or a path); ``overrides`` (``key=value``) change the run's own config,
    e.g. ``evaluation.bootstrap=2000``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--run: folder not found: {run_dir}")
    path = resolve_checkpoint(run_dir, which)
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(apply_overrides(ckpt["config"], overrides or []))
    torch.set_num_threads(cfg.train.threads or max(1, os.cpu_count() or 1))
    device = resolve_device(cfg.train.device)
    task = build_task(cfg)
    model = create_model(
        cfg.model.name, cfg.spatial_dims, cfg.in_channels, task.num_outputs, cfg.data.spatial_size,
        **cfg.model.params,
    )  # fmt: skip
    load_model_state(model, ckpt["model"], str(path))
    return LoadedRun(run_dir, cfg, task, model.to(device).eval(), path, ckpt, device)


@dataclass
class SplitOutcomes:
    """A run's predictions on one split, with the decisions its thresholds make."""

    split: str
    records: list[dict[str, Any]]
    probs: np.ndarray  # (N, outputs)
    labels: np.ndarray  # as the records hold them
    truth: np.ndarray  # (N, outputs) 0/1
    decided: np.ndarray  # (N, outputs) 0/1
    thresholds: dict[str, Any]


def split_outcomes(
    run: LoadedRun,
    split: str,
    tta: bool = False,
    thresholds: dict[str, Any] | None = None,
    parts: dict[str, list[dict[str, Any]]] | None = None,
) -> SplitOutcomes:
    """Predict the run's ``split`` (its own ``splits.json``) and decide with ``thresholds``
    (``thresholds.json`` content; None: 0.5 per output, or the arg-max)."""
    parts = parts or run_splits(run.cfg, run.run_dir, run.task)
    if not parts[split]:
        raise DataError(f"--split: the run {run.run_dir} has no {split} split; use --split val")
    records = parts[split]
    out = predict(run.model, evaluation_loader(records, run.cfg), run.task, run.flips(tta))
    probs, labels = out.probabilities, out.labels.numpy()
    decided = run.task.decisions(probs, threshold_values(thresholds))
    truth = run.task.one_hot(labels)
    return SplitOutcomes(split, records, probs, labels, truth, decided, thresholds or {})


def run_thresholds(
    run: LoadedRun,
    tta: bool = False,
    fresh: bool = False,
    parts: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The run's decision thresholds: ``thresholds.json``, or (when missing or ``fresh``) chosen
    on the validation split now and saved there."""
    stored = None if fresh else load_thresholds(run.run_dir)
    if stored is not None:
        return stored
    val = split_outcomes(run, "val", tta, parts=parts)
    thresholds = choose_thresholds(val.probs, val.truth, run.task, run.cfg.evaluation)
    thresholds["checkpoint"] = str(run.checkpoint)
    save_thresholds(thresholds, run.run_dir)
    return thresholds
