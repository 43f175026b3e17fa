"""Cross-validation groups: the folder of ``--folds all`` / ``--fold I`` and its folds.

A group folder (``<name>-cv``) holds its ``config.yaml`` and one run folder per fold
(``fold_K``), each trained as a k-fold run (``data.split.fold`` K) in the group's W&B group.
Folds started apart (a SLURM array, several nodes) find the same folder by
``logging.run_name`` and must bring the same config.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

from src.config import Config, ConfigError, config_to_dict, load_yaml, save_config
from src.training.utils import (
    CheckpointError,
    checkpoint_paths,
    fold_folder,
    group_folds,
    run_folder_name,
    runs_of,
)


def fold_config(cfg: Config, fold: int, group: str) -> Config:
    """The config of one fold of a group: k-fold split, its fold, the group's W&B group."""
    out = copy.deepcopy(cfg)
    out.data.split.strategy, out.data.split.fold = "kfold", fold
    out.logging.wandb.group = group
    return out


def folds_to_train(cfg: Config, every: bool, fold: int | None) -> list[int]:
    """The folds of ``--folds all`` (``every``) or ``--fold I``; a fold outside the split or a
    centre-holdout split is an error."""
    n_folds = cfg.data.split.n_folds
    if cfg.data.split.strategy == "center_holdout" or not (fold is None or 0 <= fold < n_folds):
        raise ConfigError(
            f"--fold: folds of the k-fold split are 0..{n_folds - 1} (data.split.n_folds), and "
            "need a split strategy other than center_holdout"
        )
    return list(range(n_folds)) if every else [int(fold)]


def check_group_config(cfg: Config, group_dir: Path) -> None:
    """Write the group's ``config.yaml``, or check that this config is the one it holds: folds
    started apart must train one group."""
    path = group_dir / "config.yaml"
    if not path.is_file():
        group_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, path)
        return
    saved, now = load_yaml(path), config_to_dict(cfg)
    for section, values in now.items():
        for key, value in values.items():
            if saved.get(section, {}).get(key) != value:
                raise ConfigError(
                    f"{section}.{key}: the group {group_dir} was made with "
                    f"{saved.get(section, {}).get(key)!r}, this config says {value!r}; train "
                    "every fold of a group with the same settings, or start another group"
                )


def unfinished_folds(cfg: Config, group_dir: Path) -> list[int]:
    """The folds of the group without a final checkpoint."""
    n_folds = cfg.data.split.n_folds
    paths = [
        checkpoint_paths(fold_folder(group_dir, k), fold_config(cfg, k, "")) for k in range(n_folds)
    ]
    return [k for k, p in enumerate(paths) if not p["final"].is_file()]


def resolve_group(cfg: Config, config: str, resume: str | None, fold: int | None) -> Path:
    """The group folder of ``--folds all`` / ``--fold I``: new (timestamped, or
    ``logging.run_name``), the one ``--resume`` names, or the latest group of ``config``."""
    out, stem = Path(cfg.logging.output_dir), Path(config).stem
    if resume and resume != "latest":
        return Path(resume)
    if fold is not None and not cfg.logging.run_name:
        raise ConfigError(
            "--fold: name the group with --set logging.run_name=NAME, so that folds started "
            "apart train into one group"
        )
    if cfg.logging.run_name or not resume:
        group = out / run_folder_name(cfg, stem, datetime.now(), group=True)
        if fold is None and not resume and group_folds(group):
            raise ConfigError(
                f"logging.run_name: {group} already holds folds; add --resume to continue it, "
                "or choose another run name"
            )
        return group
    groups = [p for p in runs_of(out, cfg, stem, group=True) if group_folds(p)]
    if not groups:
        raise CheckpointError(
            f"--resume: no group of {config} under {out}/; start one without --resume"
        )
    return groups[-1]
