"""Time MONAI's Auto3DSeg ``DataAnalyzer`` (``label_key=None``) against the planner's own header
pass on a data set (run by hand; figures in docs/RESULTS.md).

    python -m benchmarks.plan_analyzer --csv data/phantom_ct/labels.csv \
        --image-root data/phantom_ct --sample 64
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plan_analyzer")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--image-root", required=True)
    ap.add_argument("--image-column", default="image")
    ap.add_argument("--sample", type=int, default=64, help="images DataAnalyzer reads (0 = all)")
    args = ap.parse_args(argv)
    from monai.apps.auto3dseg import DataAnalyzer

    with open(args.csv, newline="") as fh:
        names = [row[args.image_column] for row in csv.DictReader(fh)]
    rng = np.random.default_rng(0)
    if args.sample and args.sample < len(names):
        names = [names[i] for i in sorted(rng.choice(len(names), args.sample, replace=False))]
    datalist = {"training": [{"image": n, "fold": 0} for n in names]}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        analyzer = DataAnalyzer(
            datalist,
            str(Path(args.image_root).resolve()),
            output_path=str(Path(tmp) / "stats.yaml"),
            device="cpu",
            worker=0,
            label_key=None,
        )
        stats = analyzer.get_all_case_stats()
        seconds = time.perf_counter() - t0
    summary = stats["stats_summary"]["image_stats"]
    print(
        f"DataAnalyzer: {len(names)} images in {seconds:.1f} s ({seconds / len(names):.3f} s each)"
    )
    print("spacing:", summary.get("spacing"))
    print("intensity:", summary.get("intensity"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
