"""Time and disk cost of the W&B predictions table of a run's split (offline, nothing uploaded).

    python -m benchmarks.wandb_table --run outputs/<run> --split test

Loads the best checkpoint and predicts the split as ``src.evaluate`` does, draws the Grad-CAM
gallery with the run's ``evaluation.gradcam_per_group`` (its overlays go into the table), makes
the thumbnails and logs the evaluation (table, curves, AUC bars; no figures) to a throw-away
offline W&B run. Prints the seconds of each part and the bytes W&B keeps for upload: the staged
artifacts (the table's images and JSON, the curve tables) and the run's media files; per scan
and for 1,000 scans.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from src.evaluate import metric_summary
from src.inference.runtime import load_run, run_thresholds, split_outcomes
from src.reporting.explain import Gallery, draw_gallery, split_thumbnails
from src.reporting.report import evaluation_log
from src.training.tracking import Tracker


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--checkpoint", default="best")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WANDB_MODE"] = "offline"  # wins over the run's config: never online
        os.environ["WANDB_DATA_DIR"] = str(Path(tmp) / "data")  # where artifacts are staged
        os.environ["WANDB_CACHE_DIR"] = str(Path(tmp) / "cache")
        run = load_run(args.run, args.checkpoint)
        sp = split_outcomes(run, args.split, thresholds=run_thresholds(run))
        ctx = metric_summary(run, sp, tta=False) | {"figures": {}, "gallery": []}
        n = run.cfg.evaluation.gradcam_per_group
        seconds = {}
        t0 = time.perf_counter()
        gallery = draw_gallery(run, sp, Path(tmp) / "gallery", n) if n else Gallery([], "", {})
        seconds["Grad-CAM gallery (the report's, reused)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        thumbnails = split_thumbnails(run, sp.records, progress=True)
        seconds["thumbnails"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        tracker = Tracker(run.cfg, Path(tmp) / "run")
        tracker.log_evaluation(evaluation_log(ctx, sp, run.task, thumbnails, gallery.overlays))
        tracker.finish()
        seconds["W&B table and charts, logged offline"] = time.perf_counter() - t0
        staged = folder_bytes(Path(tmp) / "data" / "artifacts")
        media = sum(folder_bytes(p) for p in (Path(tmp) / "run").glob("wandb/*/files/media"))
    scans = len(sp.records)
    print(f"{args.split} split: {scans} scans, {len(gallery.overlays)} with a Grad-CAM overlay")
    for what, s in seconds.items():
        print(f"  {what:40s} {s:6.1f} s")
    total = staged + media
    print(f"  staged artifacts {staged / 1e6:.2f} MB + run media {media / 1e6:.2f} MB")
    print(f"  {total / scans / 1e3:.1f} kB per scan; 1,000 scans: {total / scans / 1e3:.1f} MB")


if __name__ == "__main__":
    main()
