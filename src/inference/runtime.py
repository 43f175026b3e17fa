"""A trained run loaded for use after training: its config, task, model and checkpoint, and
the outcomes of a split (probabilities, truth and decisions).

Shared by evaluation, Grad-CAM, inference and export, so all of them see the model exactly as
the checkpoint describes it (config and class names are read from the checkpoint itself).

An ensemble loads the same way: a cross-validation group (its ``fold_K`` runs), or several runs
gathered in a folder of their own (``members.json``). Its model is ``src.models.ensemble``: the
members' probabilities averaged (``Task.combine``), so every user of a run uses it unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from src.config import Config, ConfigError, apply_overrides, config_from_dict
from src.data.loaders import evaluation_loader
from src.data.records import DataError
from src.data.splits import load_splits, merge_fold_splits, run_splits, save_splits
from src.data.transforms import preprocessing_settings
from src.files import atomic_write
from src.models import ModelError, create_model
from src.models.ensemble import Ensemble
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
    group_folds,
    load_checkpoint,
    load_model_state,
    resolve_checkpoint,
)

USER_ERRORS = (ConfigError, DataError, ModelError, CheckpointError)
MEMBERS_FILE = "members.json"  # the runs of an ensemble folder made from several runs


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: Config
    task: Task
    model: nn.Module
    checkpoint: Path
    ckpt: dict[str, Any]
    device: torch.device
    members: list[LoadedRun] = field(default_factory=list)  # an ensemble's runs, else []

    def flips(self, tta: bool) -> list[Flip]:
        """The test-time flips of ``--tta``: those training used (none if it did not flip)."""
        return self.task.flips if tta else []


def load_run(
    run_dir: str | Path | Sequence[str | Path],
    which: str = "best",
    overrides: list[str] | None = None,
    home: str | Path | None = None,
) -> LoadedRun:
    """Model (eval mode), config and task of a run folder's checkpoint ``which`` (``best``,
    ``last``, ``final`` or a path); ``overrides`` (``key=value``) change the run's own config,
    e.g. ``evaluation.bootstrap=2000``.

    A group folder, an ensemble folder, or several runs load as one ensemble of their members
    (``which`` of each). Several runs need ``home``, the folder their ensemble's outputs go to:
    it gets ``members.json`` and their common ``splits.json``."""
    dirs = [Path(run_dir)] if isinstance(run_dir, str | Path) else [Path(d) for d in run_dir]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"--run: folder not found: {d}")
    if len(dirs) == 1 and (dirs[0] / MEMBERS_FILE).is_file():
        home = dirs[0]
        dirs = [Path(d) for d in json.loads((home / MEMBERS_FILE).read_text())["runs"]]
    groups = [d for d in dirs if group_folds(d)]
    if len(dirs) == 1 and not groups:
        return load_one_run(dirs[0], which, overrides)
    if groups and len(dirs) > 1:
        raise ConfigError(
            f"--run: {groups[0]} is a cross-validation group, itself an ensemble of its folds; "
            "give the group alone, or list single runs"
        )
    if groups:
        home, members = dirs[0], finished_folds(dirs[0], which, overrides)
    elif home is None:
        raise ConfigError("--out: name the folder for the ensemble of several runs")
    else:
        members = [load_one_run(d, which, overrides) for d in dirs]
        check_members(members)
        share_splits(members, Path(home))
    return ensemble_of(members, Path(home))


def finished_folds(group: Path, which: str, overrides: list[str] | None) -> list[LoadedRun]:
    """The members of a group whose every fold has finished training; writes the group's
    ``splits.json`` (test: the folds' common test split; train: their pool) when missing."""
    folds = group_folds(group)
    members = []
    for fold in folds:
        try:
            resolve_checkpoint(fold, "final")
        except CheckpointError:
            raise CheckpointError(
                f"--run: {fold} has not finished training; finish the group with "
                f"`python -m src.training.trainer --config {group}/config.yaml --folds all "
                f"--resume {group}`"
            ) from None
        members.append(load_one_run(fold, which, overrides))
    n_folds = members[0].cfg.data.split.n_folds
    if len(folds) != n_folds:
        raise CheckpointError(
            f"--run: {group} holds {len(folds)} of its {n_folds} folds; train the others "
            "(--fold I) into it first"
        )
    check_members(members)
    if not (group / "splits.json").is_file():
        merge_fold_splits(folds, group / "splits.json")
    return members


def check_members(members: list[LoadedRun]) -> None:
    """An ensemble's members share the task, classes and preprocessing (one input feeds all)."""
    first = members[0]

    def described(m: LoadedRun) -> dict[str, Any]:
        settings = preprocessing_settings(m.cfg)
        settings.pop("dtype")  # the cache's storage, not what the model sees
        return {"task": m.task.kind, "classes": m.task.class_names, "preprocessing": settings}

    for m in members[1:]:
        a, b = described(first), described(m)
        for key in a:
            if a[key] != b[key]:
                raise ConfigError(
                    f"--run: {m.run_dir} has {key} {b[key]}, {first.run_dir} has {a[key]}; "
                    "an ensemble's runs need the same task, classes and preprocessing"
                )


def share_splits(members: list[LoadedRun], home: Path) -> None:
    """``members.json`` and the members' common ``splits.json`` in ``home``; runs split
    differently are an error (the ensemble's test split must be new to every member)."""
    first = load_splits(members[0].run_dir / "splits.json")
    for m in members[1:]:
        if load_splits(m.run_dir / "splits.json") != first:
            raise DataError(
                f"--run: {m.run_dir}/splits.json differs from {members[0].run_dir}'s; an "
                "ensemble of runs needs one split (train them with the same data.split)"
            )
    home.mkdir(parents=True, exist_ok=True)
    save_splits(first, home / "splits.json", {"members": [str(m.run_dir) for m in members]})
    with atomic_write(home / MEMBERS_FILE) as fh:
        json.dump({"runs": [str(m.run_dir) for m in members]}, fh, indent=1)


def ensemble_of(members: list[LoadedRun], home: Path) -> LoadedRun:
    """One run whose model averages the members' probabilities; test-time flips are those
    every member trained with."""
    first = members[0]
    task = build_task(first.cfg)
    task.flips = [f for f in task.flips if all(f in m.task.flips for m in members)]
    model = Ensemble([m.model for m in members], task.combine).eval()
    return LoadedRun(
        home, first.cfg, task, model, first.checkpoint, first.ckpt, first.device, members
    )


def load_one_run(run_dir: Path, which: str, overrides: list[str] | None) -> LoadedRun:
    """``load_run`` of one run folder."""
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
