"""Checkpoints and resume: save (atomic), load (``weights_only``, strict), find, name; early
stopping, whose state travels in every checkpoint.

Run folders and checkpoints are named by the split strategy. With ``data.split.strategy: auto``
(the CT default) or ``column`` names stay plain: ``ct-<date>-<time>/``,
``checkpoints/{last,best,final}.pt``. An explicit strategy tags both, so runs of one config with
different strategies never overwrite each other::

    xray-stratified-20261121-150000/checkpoints/best_stratified.pt
    xray-center-20261121-151500/checkpoints/final_center.pt
    xray-kfold2-20261121-153000/checkpoints/last_kfold2.pt

A cross-validation group (``--folds all`` / ``--fold I``) is a folder tagged ``cv`` holding one
run folder per fold: ``xray-cv-20261121-160000/fold_0/checkpoints/best_kfold0.pt``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.config import Config
from src.files import atomic_write

CHECKPOINT_FORMAT = 1
CHECKPOINT_KINDS = ("last", "best", "final")
STRATEGY_TAGS = {
    "auto": "",
    "column": "",  # the data's own split (e.g. MedMNIST's official one): nothing to choose
    "stratified": "stratified",
    "center_holdout": "center",
    "kfold": "kfold",
}
GROUP_TAG = "cv"
FOLD_FOLDER = re.compile(r"fold_(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, torn, or does not fit the model; says what to do."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` through ``atomic_write``: a crash leaves the old file or the new one."""
    with atomic_write(path, "wb") as fh:
        torch.save(checkpoint, fh)


def load_checkpoint(path: str | Path, any_format: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no code runs); errors say what to do.
    ``any_format``: accept any saved mapping (a state-dict file of another code base)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torn, truncated or not a checkpoint at all
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); delete it or resume from another checkpoint"
        ) from None
    if isinstance(ckpt, dict) and any_format:
        return ckpt
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a checkpoint of this trainer (format {CHECKPOINT_FORMAT} expected)"
        )
    return ckpt


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load into the unwrapped model; missing or extra keys are an error naming them."""
    result = unwrap_model(model).load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source}: the checkpoint does not fit this model (missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}); "
            "was it trained with another model.name or model.params?"
        )


def keep_epoch_copies(last: str | Path, epoch: int, keep: int) -> None:
    """``epoch_NNNN.pt`` beside ``last``: a hard link to the checkpoint just written (no extra
    disk until ``last`` is replaced); only the ``keep`` newest stay. ``keep`` = 0 makes none."""
    last = Path(last)
    if keep > 0:
        copy = last.parent / f"epoch_{epoch:04d}.pt"
        copy.unlink(missing_ok=True)
        try:
            os.link(last, copy)
        except OSError:  # a file system without hard links
            shutil.copyfile(last, copy)
    for old in sorted(last.parent.glob("epoch_*.pt"))[: -keep or None]:
        old.unlink(missing_ok=True)


def strategy_tag(cfg: Config, group: bool = False) -> str:
    """The tag of ``data.split.strategy`` ('' for auto / column); k-fold carries its fold; a
    cross-validation group's folder is tagged ``cv``."""
    s = cfg.data.split
    if group:
        return GROUP_TAG
    tag = STRATEGY_TAGS[s.strategy]
    return f"{tag}{s.fold}" if s.strategy == "kfold" else tag


def checkpoint_paths(run_dir: Path, cfg: Config) -> dict[str, Path]:
    """``{"last": .../last_<tag>.pt, "best": ..., "final": ...}`` (plain names without a tag)."""
    tag = strategy_tag(cfg)
    suffix = f"_{tag}" if tag else ""
    return {kind: Path(run_dir) / "checkpoints" / f"{kind}{suffix}.pt" for kind in CHECKPOINT_KINDS}


def _find_kind(run_dir: Path, kind: str) -> Path | None:
    """``checkpoints/<kind>.pt`` or, in a strategy-named run, the one ``<kind>_<tag>.pt``."""
    folder = Path(run_dir) / "checkpoints"
    plain = folder / f"{kind}.pt"
    if plain.is_file():
        return plain
    tagged = sorted(folder.glob(f"{kind}_*.pt")) if folder.is_dir() else []
    return tagged[0] if len(tagged) == 1 else None


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``last`` (written every epoch), else the newest ``*.pt``
    in ``checkpoints/``; None when there is none."""
    folder = Path(run_dir) / "checkpoints"
    last = _find_kind(Path(run_dir), "last")
    if last is not None or not folder.is_dir():
        return last
    found = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resolve_checkpoint(run_dir: str | Path, which: str = "best") -> Path:
    """``best`` / ``last`` / ``final`` of a run folder (plain or strategy-named), or a path."""
    kind = which.removesuffix(".pt")
    if kind in CHECKPOINT_KINDS:
        path = _find_kind(Path(run_dir), kind) or Path(run_dir) / "checkpoints" / f"{kind}.pt"
    else:
        path = Path(which)
    if not path.is_file():
        raise CheckpointError(
            f"--checkpoint: {path} not found; give best, last, final or a checkpoint path "
            f"(is {run_dir} a run folder?)"
        )
    return path


def run_folder_name(
    cfg: Config, stem: str, now: datetime | None = None, group: bool = False
) -> str:
    """``logging.run_name`` or ``<config stem>-<date>-<time>``, with the strategy tag after
    the name: ``xray-stratified-20261121-150000``, ``myrun-center``, a group's ``myrun-cv``."""
    tag = strategy_tag(cfg, group)
    if cfg.logging.run_name:
        return f"{cfg.logging.run_name}-{tag}" if tag else cfg.logging.run_name
    stamp = f"{now or datetime.now():%Y%m%d-%H%M%S}"
    return f"{stem}-{tag}-{stamp}" if tag else f"{stem}-{stamp}"


def runs_of(out_dir: Path, cfg: Config, stem: str, group: bool = False) -> list[Path]:
    """Timestamped run folders (or groups) of this config and strategy under ``out_dir``,
    oldest first."""
    tag = strategy_tag(cfg, group)
    pattern = re.compile(rf"{re.escape(stem)}-{re.escape(tag) + '-' if tag else ''}\d{{8}}-\d{{6}}")
    return sorted(p for p in Path(out_dir).glob(f"{stem}-*") if pattern.fullmatch(p.name))


def fold_folder(group_dir: str | Path, fold: int) -> Path:
    """The run folder of fold ``fold`` inside a cross-validation group."""
    return Path(group_dir) / f"fold_{fold}"


def group_folds(path: str | Path) -> list[Path]:
    """The fold run folders of a cross-validation group, by fold ([] for a plain run)."""
    found = [p for p in Path(path).glob("fold_*") if p.is_dir() and FOLD_FOLDER.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def check_resume_compatible(saved: dict[str, Any], now: dict[str, Any], source: Path) -> None:
    """A resume must not change what the weights mean: model, task, classes or input size."""
    for section, key in [
        ("model", "name"),
        ("model", "params"),
        ("data", "task"),
        ("data", "label_columns"),
        ("data", "spatial_size"),
    ]:
        if saved[section][key] != now[section][key]:
            raise CheckpointError(
                f"{section}.{key}: the run at {source.parent.parent} was trained with "
                f"{saved[section][key]!r}, the config now says {now[section][key]!r}; "
                "resume with the run's own settings or start a new run without --resume"
            )


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without an improvement of more than ``min_delta``."""

    mode: str = "max"
    patience: int = 10
    min_delta: float = 0.0
    best: float = float("nan")
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record ``value``; return True when it is a new best."""
        if math.isnan(value):
            self.bad_epochs += 1
            return False
        if math.isnan(self.best):
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
