"""The disk-cache key follows preprocessing settings and nothing else."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from src.config import config_from_dict
from src.data.transforms import build_augmentation, build_preprocessing, preprocessing_key

BASE = {"data": {"csv": "x.csv", "image_root": ".", "label_columns": ["a"]}}


def key_with(**data):
    raw = {"data": {**BASE["data"], **data}}
    return preprocessing_key(config_from_dict(raw))


@pytest.mark.parametrize(
    "change",
    [
        {"spacing": [2.0, 2.0, 2.0]},
        {"spatial_size": [32, 32, 32]},
        {"resize_mode": "resize"},
        {"intensity_min": -900.0},
        {"intensity_max": 500.0},
        {"orientation": "LPS"},
        {"cache_dtype": "float16"},
        {"windows": ["lung", "bone"]},
    ],
)
def test_key_changes_with_preprocessing(change):
    assert key_with(**change) != key_with()


@pytest.mark.parametrize(
    "change",
    [
        {"augment": {"flip_prob": 0.1}},
        {"cache": "ram"},
        {"split": {"seed": 7}},
        {"csv": "other.csv"},
    ],
)
def test_key_ignores_what_preprocessing_does_not_use(change):
    assert key_with(**change) == key_with()


def test_key_is_stable():
    assert key_with() == key_with()


def test_augmentation_is_random_and_preprocessing_is_not():
    cfg = config_from_dict(BASE)
    assert not any(type(t).__name__.startswith("Rand") for t in build_preprocessing(cfg).transforms)
    names = [type(t).__name__ for t in build_augmentation(cfg, train=True).transforms]
    assert any(n.startswith("Rand") for n in names)
    assert not any(
        type(t).__name__.startswith("Rand") for t in build_augmentation(cfg, train=False).transforms
    )
    assert dataclasses.is_dataclass(cfg)


def test_window_channels_equal_monai_windowing_of_each_window(tiny_phantom):
    path = str(next((tiny_phantom / "images").glob("*.nii.gz")))
    data = BASE["data"] | {"spacing": [8.0, 8.0, 8.0], "spatial_size": [32, 32, 24]}
    windows = ["lung", "mediastinum", "bone", [0, 100]]
    multi = config_from_dict({"data": data | {"windows": windows}})
    assert multi.in_channels == 4
    x = build_preprocessing(multi)({"image": path})["image"]
    assert x.shape == (4, 32, 32, 24)
    for c, (lo, hi) in enumerate([(-1000, 400), (-160, 240), (-500, 1300), (0, 100)]):
        one = config_from_dict({"data": data | {"intensity_min": lo, "intensity_max": hi}})
        expected = build_preprocessing(one)({"image": path})["image"]  # ScaleIntensityRanged
        torch.testing.assert_close(x[c : c + 1], expected, atol=0, rtol=0)
