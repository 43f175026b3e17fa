"""Does the Grad-CAM peak of a true positive fall inside the planted finding? (phantom runs)

    python -m benchmarks.gradcam_localisation --run outputs/<phantom run> --split test

For every true positive of the split (decided with the run's thresholds.json, chosen on the
validation split), the map of that finding is computed on the preprocessed scan, and its
peak voxel is checked against the finding's boxes from the phantom's regions.json, mapped
into the model's voxels through the preprocessed image's affine (half a voxel of slack).
Prints the rate per finding and over all true positives; the goal is >= 0.70 overall.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from src.inference.runtime import load_run, run_thresholds, split_outcomes
from src.reporting.explain import localisation, print_localisation
from src.reporting.gradcam import CAM_METHODS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--checkpoint", default="best")
    ap.add_argument(
        "--method", default="", choices=["", *CAM_METHODS], help="default: the run's config"
    )
    ap.add_argument("--layer", default="", help="CNN module name (default: config or automatic)")
    ap.add_argument("--margin", type=float, default=0.5, help="slack around each box, in voxels")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run = load_run(args.run, args.checkpoint)
    sp = split_outcomes(run, args.split, thresholds=run_thresholds(run))
    result = localisation(run, sp, args.margin, args.method, args.layer)
    print_localisation(result)
    print(f"{time.perf_counter() - t0:.0f} s")
    out = Path(args.run) / f"gradcam_localisation_{args.split}.json"
    out.write_text(json.dumps({"args": vars(args), "result": result}, indent=1))


if __name__ == "__main__":
    main()
