"""Compact (float16) cache storage: the model sees nearly the same inputs and a tiny training
ends with nearly the same metrics as with float32 storage."""

from __future__ import annotations

import dataclasses

import torch

from src.data.loaders import build_dataset
from src.data.splits import prepare_splits
from src.training.tasks import build_task
from src.training.trainer import fit


def test_float16_cache_is_within_1e3_of_float32(tiny_config, tmp_path):
    cfg, _ = tiny_config
    recs = prepare_splits(cfg, tmp_path, reuse=False, task=build_task(cfg), progress=False)["val"][
        :3
    ]
    out = {}
    for dtype in ("float32", "float16"):
        cfg.data.cache_dtype = dtype
        ds = build_dataset(recs, cfg, train=False, progress=False)
        out[dtype] = torch.stack([ds[i]["image"] for i in range(len(recs))])
    assert out["float16"].dtype == torch.float32
    diff = (out["float16"] - out["float32"]).abs().max().item()
    assert 0 < diff < 1e-3  # rounded, but by less than a thousandth of the [0, 1] window


def test_tiny_training_metrics_do_not_change_with_float16_storage(tiny_config, tmp_path):
    cfg, _ = tiny_config
    summaries = {}
    for dtype in ("float32", "float16"):
        run_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dtype=dtype))
        summaries[dtype] = fit(run_cfg, tmp_path / dtype)
    rows = {}
    for dtype in summaries:
        lines = (tmp_path / dtype / "metrics.csv").read_text().splitlines()
        header, last = lines[0].split(","), lines[-1].split(",")
        rows[dtype] = dict(zip(header, map(float, last), strict=True))
    for key in ("train/loss", "val/loss"):
        assert abs(rows["float16"][key] - rows["float32"][key]) < 0.01, key
