"""Loader settings chosen from the cores available, and every one overridable in the config."""

from __future__ import annotations

import os

import pytest

from src.config import ConfigError, config_from_dict
from src.data.loader_settings import LoaderSettings, available_cores, resolve_loader_settings

BASE = {"csv": "x.csv", "image_root": ".", "label_columns": ["a"]}


def settings(cores: int, **train) -> LoaderSettings:
    cfg = config_from_dict({"data": BASE, "train": {"device": "cpu", **train}})
    return resolve_loader_settings(cfg, cores=cores)


@pytest.mark.parametrize(
    ("cores", "train", "expected"),
    [
        (1, {}, LoaderSettings(0, 1, False, False, None)),
        (2, {}, LoaderSettings(1, 1, False, True, 2)),
        (16, {}, LoaderSettings(4, 12, False, True, 2)),
        (16, {"device": "cuda"}, LoaderSettings(8, 8, True, True, 2)),
        (
            2,
            {"num_workers": 0, "persistent_workers": True},
            LoaderSettings(0, 2, False, False, None),
        ),
        (
            8,
            {"num_workers": 3, "threads": 2, "prefetch_factor": 6},
            LoaderSettings(3, 2, False, True, 6),
        ),
        (8, {"device": "cuda", "pin_memory": False}, LoaderSettings(7, 1, False, True, 2)),
        (
            8,
            {"persistent_workers": False, "pin_memory": True},
            LoaderSettings(4, 4, True, False, 2),
        ),
    ],
)
def test_automatic_values_and_overrides(cores, train, expected):
    assert settings(cores, **train) == expected


def test_available_cores_is_within_the_machine():
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("key", "value"),
    [("pin_memory", "yes"), ("persistent_workers", 2), ("prefetch_factor", -1)],
)
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        config_from_dict({"data": BASE, "train": {key: value}})


def test_torchrun_processes_share_the_node(monkeypatch):
    alone = available_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert available_cores() == max(1, alone // 2)
