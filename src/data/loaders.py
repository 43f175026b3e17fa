"""Datasets and loaders: fixed preprocessing behind a disk and/or RAM cache, augmentation after.

``data.cache``:
- ``none``: preprocess every item every epoch (MONAI ``Dataset``);
- ``disk``: MONAI ``PersistentDataset`` in ``<cache_dir>/<preprocessing_key>/``;
- ``ram``: MONAI ``CacheDataset`` (built once, before the first epoch);
- ``disk+ram``: the RAM cache filled from the disk cache (fast restarts, fast epochs).

A disk cache entry's name hashes the image path, its size and modification time and the label,
so an edited or regenerated file is never served from a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from torch.utils.data import Sampler

from src.config import Config
from src.data.transforms import build_augmentation, build_preprocessing, preprocessing_key


def item_hash(item: dict[str, Any]) -> bytes:
    """Disk-cache key of one item: path, file size and mtime, label."""
    st = os.stat(item["image"])
    key = [item["image"], st.st_size, st.st_mtime_ns, item["label"].tolist()]
    return hashlib.md5(json.dumps(key).encode()).hexdigest().encode()


def to_items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the transforms see: the path, the label as a tensor and the id."""
    return [
        {"image": r["image"], "label": torch.as_tensor(r["label"]), "id": r["id"]}
        for r in records
    ]


def cache_folder(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) / preprocessing_key(cfg)


def build_dataset(
    records: list[dict[str, Any]], cfg: Config, train: bool, progress: bool = True
) -> Dataset:
    """Cached fixed preprocessing of ``records`` followed by (train-only) augmentation."""
    items = to_items(records)
    preprocessing = build_preprocessing(cfg)
    mode = cfg.data.cache
    if mode in ("disk", "disk+ram"):
        folder = cache_folder(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        fixed: Dataset = PersistentDataset(
            items, transform=preprocessing, cache_dir=folder, hash_func=item_hash
        )
        if mode == "disk+ram":
            fixed = CacheDataset(fixed, transform=None, num_workers=cache_workers(), progress=progress)
    elif mode == "ram":
        fixed = CacheDataset(items, preprocessing, num_workers=cache_workers(), progress=progress)
    else:
        fixed = Dataset(items, transform=preprocessing)
    return Dataset(fixed, transform=build_augmentation(cfg, train=train))


def cache_workers() -> int:
    return max(1, (os.cpu_count() or 1))


def resolve_num_workers(cfg: Config) -> int:
    """``train.num_workers`` or, when -1, one fewer than the cores (at most 4)."""
    if cfg.train.num_workers >= 0:
        return cfg.train.num_workers
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def build_loader(
    dataset: Dataset,
    cfg: Config,
    train: bool,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A MONAI DataLoader; ``generator`` (reseeded every epoch) fixes order and worker seeds.
    ``sampler`` (a rank's shard under torchrun) replaces the loader's own shuffling."""
    workers = resolve_num_workers(cfg)
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        # Fresh workers each epoch: their seeds derive from the epoch's generator state, which
        # keeps augmentation identical after a resume.
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )
