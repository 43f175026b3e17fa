"""Resident memory of a training process across many epochs (tiny phantom, RAM cache).

    python -m benchmarks.memory_growth --epochs 30

Prints RSS after every epoch and the growth from the end of epoch 1 (the RAM cache is full
then) to the maximum afterwards. ``tests/training/test_long_run.py`` bounds the same growth
over 6 epochs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from src.config import config_from_dict
from src.data.phantom import generate_phantom_ct
from tests.conftest import tiny_raw_config
from tests.training.test_long_run import fit_recording_rss


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="memory-"))
    phantom = out / "phantom"
    if not (phantom / "labels.csv").is_file():
        generate_phantom_ct(phantom, n_patients=12, seed=3, progress=False)
    raw = tiny_raw_config(phantom, out)
    raw["train"] |= {"epochs": args.epochs, "patience": args.epochs}
    raw["checkpoint"] = {"keep_last_n": 3}
    cfg = config_from_dict(raw)
    rss = fit_recording_rss(cfg, out / "run")
    growth = max(rss[1:]) - rss[0]
    print(f"RSS per epoch (MB): {[round(r, 1) for r in rss]}")
    print(f"growth after epoch 1 over {args.epochs} epochs: {growth:.1f} MB")
    print(f"checkpoints: {sorted(p.name for p in (out / 'run' / 'checkpoints').iterdir())}")


if __name__ == "__main__":
    main()
