"""``python -m src.plan --csv labels.csv --image-root DIR --out configs/mine.yaml``: plan a
training config for a new data set, with its fingerprint and data-set report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.config import ConfigError
from src.data.records import DataError
from src.models import ModelError
from src.plan.planner import data_settings, plan_dataset
from src.plan.report import write_dataset_report
from src.training.tasks import TASKS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m src.plan", description=__doc__.splitlines()[0])
    ap.add_argument("--csv", required=True, help="labels CSV, one row per image")
    ap.add_argument("--image-root", required=True, help="folder the CSV's image paths are under")
    ap.add_argument("--image-column", default="image", help="CSV column of image paths")
    ap.add_argument(
        "--label-columns", nargs="+", help="label column(s) (default: every other column)"
    )
    ap.add_argument("--task", choices=sorted(TASKS), help="default: from the labels")
    ap.add_argument("--memory-gb", type=float, help="memory budget (default: half the RAM, <= 16)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where a step is measured")
    ap.add_argument("--sample", type=int, default=32, help="images whose voxels are read")
    ap.add_argument("--out", required=True, help="the config to write, e.g. configs/mine.yaml")
    ap.add_argument(
        "--report-dir", help="fingerprint.json and dataset_report.html (default outputs/plan/NAME)"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report_dir = Path(args.report_dir or Path("outputs/plan") / Path(args.out).stem)
    progress = sys.stderr.isatty()
    try:
        settings = data_settings(
            args.csv, args.image_root, args.image_column, args.label_columns, args.task or ""
        )
        cfg, fp, plan = plan_dataset(
            settings, args.out, report_dir, args.memory_gb, args.device, args.sample, progress
        )
        report = write_dataset_report(cfg, fp, plan, report_dir, progress)
    except (ConfigError, DataError, ModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"config:       {args.out}")
    print(f"fingerprint:  {report_dir / 'fingerprint.json'}")
    print(f"report:       {report}")
    print(f"train it:     python -m src.training.trainer --config {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
