"""Names of run folders and checkpoints, tagged with the split strategy.

With ``data.split.strategy: auto`` (the CT default) or ``column`` names stay plain:
``ct-<date>-<time>/``, ``checkpoints/{last,best,final}.pt``. An explicit strategy tags both, so
runs of one config with different strategies never overwrite each other::

    xray-stratified-20261121-150000/checkpoints/best_stratified.pt
    xray-center-20261121-151500/checkpoints/final_center.pt
    xray-kfold2-20261121-153000/checkpoints/last_kfold2.pt
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from src.config import Config

STRATEGY_TAGS = {
    "auto": "",
    "column": "",  # the data's own split (e.g. MedMNIST's official one): nothing to choose
    "stratified": "stratified",
    "center_holdout": "center",
    "kfold": "kfold",
}
CHECKPOINT_KINDS = ("last", "best", "final")


def strategy_tag(cfg: Config) -> str:
    """The tag of ``data.split.strategy`` ('' for auto); k-fold carries its fold number."""
    s = cfg.data.split
    tag = STRATEGY_TAGS[s.strategy]
    return f"{tag}{s.fold}" if s.strategy == "kfold" else tag


def checkpoint_paths(run_dir: Path, cfg: Config) -> dict[str, Path]:
    """``{"last": .../last_<tag>.pt, "best": ..., "final": ...}`` (plain names without a tag)."""
    tag = strategy_tag(cfg)
    suffix = f"_{tag}" if tag else ""
    return {kind: run_dir / "checkpoints" / f"{kind}{suffix}.pt" for kind in CHECKPOINT_KINDS}


def run_folder_name(cfg: Config, stem: str, now: datetime | None = None) -> str:
    """``logging.run_name`` or ``<config stem>-<date>-<time>``, with the strategy tag after
    the name: ``xray-stratified-20261121-150000``, ``myrun-center``."""
    tag = strategy_tag(cfg)
    if cfg.logging.run_name:
        return f"{cfg.logging.run_name}-{tag}" if tag else cfg.logging.run_name
    stamp = f"{now or datetime.now():%Y%m%d-%H%M%S}"
    return f"{stem}-{tag}-{stamp}" if tag else f"{stem}-{stamp}"


def runs_of(out_dir: Path, cfg: Config, stem: str) -> list[Path]:
    """Timestamped run folders of this config and strategy under ``out_dir``, oldest first."""
    tag = strategy_tag(cfg)
    pattern = re.compile(rf"{re.escape(stem)}-{re.escape(tag) + '-' if tag else ''}\d{{8}}-\d{{6}}")
    return sorted(p for p in out_dir.glob(f"{stem}-*") if pattern.fullmatch(p.name))


def find_checkpoint(run_dir: Path, kind: str) -> Path | None:
    """``checkpoints/<kind>.pt`` or, in a strategy-named run, ``<kind>_<tag>.pt``; None if
    the run has neither."""
    folder = Path(run_dir) / "checkpoints"
    plain = folder / f"{kind}.pt"
    if plain.is_file():
        return plain
    tagged = sorted(folder.glob(f"{kind}_*.pt")) if folder.is_dir() else []
    return tagged[0] if len(tagged) == 1 else None
