"""SIGKILL at five kinds of moments (disk-cache write, checkpoint write, in an epoch, after an
epoch), each followed by --resume, and a truncated disk-cache entry: the finished run's
metrics.csv equals the uninterrupted one. The 20-kill version is benchmarks/sigkill_stress.py."""

from __future__ import annotations

from benchmarks.sigkill_stress import stress
from src.training.utils import load_checkpoint

SCHEDULE = ["cache-write", "checkpoint-write", "in-epoch", "checkpoint-write", "after-epoch"]


def test_five_kills_then_resume_match_the_uninterrupted_run(tiny_config, tmp_path):
    _, config = tiny_config
    result = stress(config, tmp_path, kills=5, seed=0, epochs=4, schedule=SCHEDULE)
    assert result["kills"] == 5
    assert result["moments"] == SCHEDULE  # every moment came before its kill
    assert result["cache_rebuilds_logged"] >= 1  # the truncated cache entry
    final = load_checkpoint(tmp_path / "runs" / "victim" / "checkpoints" / "final.pt")
    assert final["epoch"] == 4
