"""Disk and RAM caches give the same tensors as no cache; stale entries are never served."""

from __future__ import annotations

import os
import shutil

import torch

from src.data.loaders import build_dataset, cache_folder, item_hash, to_items
from src.data.splits import prepare_splits
from src.training.tasks import build_task


def test_caches_match_uncached_and_live_under_the_key(tiny_config, tmp_path):
    cfg, _ = tiny_config
    parts = prepare_splits(cfg, tmp_path, reuse=False, task=build_task(cfg), progress=False)
    recs = parts["val"][:3]
    out = {}
    for mode in ("none", "disk", "ram", "disk+ram"):
        cfg.data.cache = mode
        ds = build_dataset(recs, cfg, train=False, progress=False)
        out[mode] = torch.stack([ds[i]["image"] for i in range(len(recs))])
    for mode in ("disk", "ram", "disk+ram"):
        assert torch.equal(out[mode], out["none"])
    assert out["none"].shape == (3, 1, *cfg.data.spatial_size)
    assert out["none"].dtype == torch.float32
    files = list(cache_folder(cfg).glob("*.pt"))
    assert len(files) == 3


def test_item_hash_changes_when_the_file_or_label_changes(tiny_phantom, tmp_path):
    src = next((tiny_phantom / "images").glob("*.nii.gz"))
    path = tmp_path / src.name
    shutil.copy(src, path)
    rec = {"image": str(path), "label": torch.zeros(3).numpy(), "id": "x"}
    item = to_items([rec])[0]
    before = item_hash(item)
    assert item_hash(to_items([rec])[0]) == before
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert item_hash(item) != before
    rec2 = dict(rec, label=torch.ones(3).numpy())
    assert item_hash(to_items([rec2])[0]) != item_hash(item)


def test_compact_cache_is_float16_and_model_input_float32(tiny_config, tmp_path):
    cfg, _ = tiny_config
    parts = prepare_splits(cfg, tmp_path, reuse=False, task=build_task(cfg), progress=False)
    cfg.data.cache_dtype = "float16"
    ds = build_dataset(parts["val"][:2], cfg, train=True, progress=False)
    assert ds.data[0]["image"].dtype == torch.float16  # what the RAM cache holds
    assert ds[0]["image"].dtype == torch.float32  # what the model gets
