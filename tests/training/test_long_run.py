"""Long runs stay bounded: resident memory does not grow across epochs, and checkpoints on disk
are last/best/final plus at most ``checkpoint.keep_last_n`` epoch copies."""

from __future__ import annotations

import gc
import os

from src.training import trainer
from src.training.utils import load_checkpoint

EPOCHS = 6
MAX_GROWTH_MB = 8.0  # after the first epoch; a leak of one batch's graph per step is far more


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fit_recording_rss(cfg, run_dir) -> list[float]:
    """Train ``cfg`` in ``run_dir``; the RSS (MB) after each epoch, measured when the epoch's
    ``metrics.csv`` has been written (after a garbage collection)."""
    rss: list[float] = []
    save = trainer.save_epoch

    def save_and_measure(run, improved):
        save(run, improved)
        gc.collect()
        rss.append(rss_mb())

    trainer.save_epoch = save_and_measure
    try:
        trainer.fit(cfg, run_dir)
    finally:
        trainer.save_epoch = save
    return rss


def test_memory_and_checkpoints_stay_bounded(tiny_config, tmp_path):
    cfg, _ = tiny_config
    cfg.train.epochs = EPOCHS
    cfg.train.patience = EPOCHS
    cfg.checkpoint.keep_last_n = 2
    run = tmp_path / "long"
    rss = fit_recording_rss(cfg, run)
    assert len(rss) == EPOCHS
    growth = max(rss[1:]) - rss[0]  # from the end of epoch 1 (RAM cache full)
    print(f"RSS after each epoch (MB): {[round(r, 1) for r in rss]}; growth {growth:.1f} MB")
    assert growth < MAX_GROWTH_MB, rss

    folder = run / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["best.pt", "epoch_0005.pt", "epoch_0006.pt", "final.pt", "last.pt"]
    assert load_checkpoint(folder / "epoch_0005.pt")["epoch"] == 5
    assert load_checkpoint(folder / "epoch_0006.pt")["epoch"] == EPOCHS
