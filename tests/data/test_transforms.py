"""The disk-cache key follows preprocessing settings and nothing else."""

from __future__ import annotations

import dataclasses

import pytest

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
