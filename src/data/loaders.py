"""Datasets and loaders: fixed preprocessing behind a disk and/or RAM cache, augmentation after.

``data.cache``:
- ``none``: preprocess every item every epoch (MONAI ``Dataset``);
- ``disk``: MONAI ``PersistentDataset`` in ``<cache_dir>/<preprocessing_key>/``;
- ``ram``: MONAI ``CacheDataset`` (built once, before the first epoch);
- ``disk+ram``: the RAM cache filled from the disk cache (fast restarts, fast epochs).

A disk cache entry's name hashes the image path, its size and modification time (of every file
of a DICOM series folder), the chosen series and the label, so an edited or regenerated file is
never served from a stale entry. Loader settings (workers,
threads, pinning, persistence, prefetch) come from ``src.data.loader_settings``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset
from torch.utils.data import Sampler

from src.config import Config
from src.data.augmented import AugmentedDataset
from src.data.disk_cache import CheckedPersistentDataset
from src.data.loader_settings import available_cores, resolve_loader_settings
from src.data.records import image_version
from src.data.transforms import build_augmentation, build_preprocessing, preprocessing_key


def item_hash(item: dict[str, Any]) -> bytes:
    """Disk-cache key of one item: path, size and mtime of its file(s), series, label."""
    path = item["image"]
    key = [path, image_version(path), item.get("series_uid", ""), item["label"].tolist()]
    return hashlib.md5(json.dumps(key).encode()).hexdigest().encode()


def to_items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the transforms see: the path (and series), the label as a tensor and the id."""
    return [
        {
            "image": r["image"],
            "series_uid": r.get("series_uid", ""),
            "label": torch.as_tensor(r["label"]),
            "id": r["id"],
        }
        for r in records
    ]


def cache_folder(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) / preprocessing_key(cfg)


def build_dataset(
    records: list[dict[str, Any]], cfg: Config, train: bool, progress: bool = True
) -> AugmentedDataset:
    """Cached fixed preprocessing of ``records`` followed by (train-only) augmentation."""
    items = to_items(records)
    preprocessing = build_preprocessing(cfg)
    mode = cfg.data.cache
    if mode in ("disk", "disk+ram"):
        folder = cache_folder(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        fixed: Dataset = CheckedPersistentDataset(
            items, transform=preprocessing, cache_dir=folder, hash_func=item_hash
        )
        if mode == "disk+ram":
            fixed = CacheDataset(
                fixed, transform=None, num_workers=cache_workers(), progress=progress
            )
    elif mode == "ram":
        fixed = CacheDataset(items, preprocessing, num_workers=cache_workers(), progress=progress)
    else:
        fixed = Dataset(items, transform=preprocessing)
    return AugmentedDataset(fixed, transform=build_augmentation(cfg, train=train))


def cache_workers() -> int:
    return available_cores()


def drops_single_last(n: int, batch_size: int) -> bool:
    """Whether training drops the last batch: one sample breaks BatchNorm (shuffling varies
    which sample that is)."""
    return n > batch_size and n % batch_size == 1


def evaluation_loader(
    data: list[dict[str, Any]] | Dataset, cfg: Config, sampler: Sampler | None = None
) -> DataLoader:
    """One in-order pass over records (built as a dataset without augmentation) or a dataset:
    validation, test, evaluation. ``sampler`` (a rank's shard under torchrun) replaces the
    order. Training batches come from ``src.data.stream.EpochStream``."""
    if isinstance(data, list):
        data = build_dataset(data, cfg, train=False, progress=False)
    s = resolve_loader_settings(cfg)
    return DataLoader(
        data,
        batch_size=cfg.train.batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=s.num_workers,
        pin_memory=s.pin_memory,
        persistent_workers=s.persistent_workers,
        prefetch_factor=s.prefetch_factor,
    )
