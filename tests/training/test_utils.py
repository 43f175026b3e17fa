"""Checkpoints and resume: names carry the split strategy (plain for auto/column), the
latest-checkpoint search, --resume and best/last/final/path resolution find both kinds; saves are
atomic and loads refuse what is not a checkpoint."""

from __future__ import annotations

import argparse
import os
from datetime import datetime

import pytest
import torch

from src.config import config_from_dict
from src.training.trainer import resolve_run
from src.training.utils import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_paths,
    find_latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    run_folder_name,
    runs_of,
    save_checkpoint,
    strategy_tag,
)

NOW = datetime(2026, 11, 21, 15, 0, 0)


def cfg(strategy="auto", run_name="", out="outputs", **split):
    return config_from_dict(
        {
            "data": {
                "csv": "x",
                "image_root": ".",
                "label_columns": ["a"],
                "split": {"strategy": strategy, "holdout_centers": ["C"], **split},
            },
            "logging": {"run_name": run_name, "output_dir": str(out)},
        }
    )


@pytest.mark.parametrize(
    ("strategy", "split", "names", "folder"),
    [
        ("auto", {}, ["last.pt", "best.pt", "final.pt"], "xray-20261121-150000"),
        ("column", {}, ["last.pt", "best.pt", "final.pt"], "xray-20261121-150000"),
        (
            "stratified",
            {},
            ["last_stratified.pt", "best_stratified.pt", "final_stratified.pt"],
            "xray-stratified-20261121-150000",
        ),
        (
            "center_holdout",
            {},
            ["last_center.pt", "best_center.pt", "final_center.pt"],
            "xray-center-20261121-150000",
        ),
        (
            "kfold",
            {"fold": 2},
            ["last_kfold2.pt", "best_kfold2.pt", "final_kfold2.pt"],
            "xray-kfold2-20261121-150000",
        ),
    ],
)
def test_checkpoint_names_carry_the_strategy(strategy, split, names, folder, tmp_path):
    c = cfg(strategy, **split)
    paths = checkpoint_paths(tmp_path, c)
    assert [p.name for p in paths.values()] == names
    assert all(p.parent == tmp_path / "checkpoints" for p in paths.values())
    assert run_folder_name(c, "xray", NOW) == folder
    tag = strategy_tag(c)
    assert run_folder_name(cfg(strategy, run_name="mine", **split), "xray") == (
        f"mine-{tag}" if tag else "mine"
    )


def test_latest_checkpoint_and_latest_run_per_strategy(tmp_path):
    out = tmp_path / "outputs"
    for strategy, stamp in [
        ("stratified", "20261121-150000"),
        ("center_holdout", "20261121-160000"),
    ]:
        c = cfg(strategy, out=out)
        run = out / run_folder_name(c, "xray", datetime.strptime(stamp, "%Y%m%d-%H%M%S"))
        paths = checkpoint_paths(run, c)
        paths["last"].parent.mkdir(parents=True)
        for i, kind in enumerate(["best", "last"]):  # last written after best
            paths[kind].write_bytes(b"x")
            os.utime(paths[kind], (1000 + i, 1000 + i))
        assert find_latest_checkpoint(run) == paths["last"]
    # the newer centre-holdout run must not be taken for the stratified one
    strat = cfg("stratified", out=out)
    assert [p.name for p in runs_of(out, strat, "xray")] == ["xray-stratified-20261121-150000"]
    run_dir, ckpt = resolve_run(
        argparse.Namespace(resume="latest", config="configs/xray.yaml"), strat
    )
    assert ckpt.name == "last_stratified.pt" and run_dir.name.startswith("xray-stratified-")
    assert runs_of(out, cfg("auto", out=out), "xray") == []  # plain names are a separate family


def test_resolve_checkpoint_reads_plain_and_strategy_names_and_paths(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match=r"--checkpoint: .*best.pt not found"):
        resolve_checkpoint(tmp_path, "best")
    (tmp_path / "checkpoints" / "best_center.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, "best").name == "best_center.pt"
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, "best.pt").name == "best.pt"
    other = tmp_path / "elsewhere.pt"
    other.write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, str(other)) == other


def test_saved_checkpoint_loads_and_a_torn_one_is_refused(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"format_version": CHECKPOINT_FORMAT, "w": torch.ones(3)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        load_checkpoint(path)
