"""Predict new scans with a trained run (`python -m src.inference.predict --run R FILES --out F`).

Files and folders go through the run's own preprocessing, read from its checkpoint: a folder of
DICOM slices (with or without a .dcm extension) is one scan, any other folder a list of its
image files. Writes a CSV (one row per readable scan: per-output probabilities ``prob/<name>``,
decisions ``pred/<name>`` at the run's thresholds or arg-max, and ``predicted``, the names
decided positive) and a JSON beside it (the same plus class names, thresholds and
their rule, and the files that failed). A file that cannot be read is named on stderr and the
rest still run; the exit status is 0 when every file was predicted, 1 when any failed, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Compose

from src.config import ConfigError
from src.data.dicom import is_series_folder
from src.data.records import IMAGE_SUFFIXES
from src.data.transforms import build_augmentation, build_preprocessing
from src.files import atomic_write, write_csv
from src.inference.runtime import USER_ERRORS, LoadedRun, load_run
from src.reporting.thresholds import load_thresholds, rule_summary, threshold_values
from src.training.loop import predict


def collect_inputs(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Scans named (files, DICOM series folders) or found directly in named folders;
    (scans, [(path, why missing)])."""
    files, missing = [], []
    for name in paths:
        p = Path(name)
        if is_series_folder(p):
            files.append(p)
        elif p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)
            )
            if not found:
                missing.append((name, "folder holds no image files"))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            missing.append((name, "no such file or folder"))
    return files, missing


def root_cause(err: BaseException) -> str:
    """The innermost error as one line (MONAI wraps a reader's error in 'applying transform')."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = (str(err).strip().splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {text}"


def file_batches(
    run: LoadedRun, files: list[Path], read: list[Path], failed: list[tuple[str, str]]
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``files`` through the run's preprocessing, read one at a time; appends each
    file to ``read`` or, with the reason, to ``failed`` (the rest still run)."""
    transform = Compose([build_preprocessing(run.cfg), build_augmentation(run.cfg, train=False)])
    batch: list[torch.Tensor] = []
    for f in files:
        try:
            batch.append(transform({"image": str(f)})["image"])
            read.append(f)
        except Exception as err:  # any unreadable file: name it, go on with the rest
            failed.append((str(f), root_cause(err)))
        if len(batch) == run.cfg.train.batch_size:
            yield {"image": torch.stack(batch)}
            batch = []
    if batch:
        yield {"image": torch.stack(batch)}


def prediction_rows(
    run: LoadedRun, files: list[Path], thresholds: dict[str, Any] | None, tta: bool = False
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Rows of predictions of the readable files (probabilities, decisions, the names of the
    outputs decided positive), and (file, reason) of those that failed."""
    task, read, failed = run.task, [], []
    out = predict(run.model, file_batches(run, files, read, failed), task, run.flips(tta))
    probs = out.probabilities
    decided = task.decisions(probs, threshold_values(thresholds))
    rows = []
    for f, p, d in zip(read, probs, decided, strict=True):
        row: dict[str, Any] = {"file": str(f)}
        row |= {f"prob/{n}": round(float(v), 6) for n, v in zip(task.output_names, p, strict=True)}
        row |= {f"pred/{n}": int(v) for n, v in zip(task.output_names, d, strict=True)}
        row["predicted"] = "; ".join(n for n, v in zip(task.output_names, d, strict=True) if v)
        rows.append(row)
    return rows, failed


def write_outputs(
    rows: list[dict[str, Any]],
    failed: list[tuple[str, str]],
    out: Path,
    run: LoadedRun,
    thresholds: dict[str, Any] | None,
) -> Path:
    """The CSV at ``out`` and the JSON beside it; returns the JSON path."""
    write_csv(out, rows, None if rows else ["file"])
    meta = {
        "run": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "members": [str(m.checkpoint) for m in run.members],
        "task": run.task.kind,
        "class_names": run.task.output_names,
        "thresholds": thresholds,
        "decision": rule_summary(thresholds) if thresholds else run.task.default_decision,
        "predictions": rows,
        "failed": [{"file": f, "error": why} for f, why in failed],
    }
    path = out.with_suffix(".json")
    with atomic_write(path) as fh:
        json.dump(meta, fh, indent=1)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.inference.predict", description=__doc__)
    ap.add_argument("--run", required=True, help="run, group or ensemble folder")
    ap.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    ap.add_argument("--out", default="predictions.csv", help="CSV to write (JSON beside it)")
    ap.add_argument("--checkpoint", default="best", help="best, last, final or a checkpoint path")
    ap.add_argument(
        "--tta", action="store_true", help="average over the flips training used (none if none)"
    )
    args = ap.parse_args(argv)
    try:
        run = load_run(args.run, args.checkpoint)
        files, failed = collect_inputs(args.inputs)
        if not files:
            raise ConfigError("inputs: no image files found in " + ", ".join(args.inputs))
        thresholds = load_thresholds(run.run_dir)
        if thresholds is None and run.task.threshold_names:
            print(
                f"warning: {run.run_dir}/thresholds.json missing (run `python -m src.evaluate "
                f"--run {run.run_dir}` to choose thresholds on validation); using 0.5",
                file=sys.stderr,
            )
        rows, unreadable = prediction_rows(run, files, thresholds, args.tta)
        failed += unreadable
        meta = write_outputs(rows, failed, Path(args.out), run, thresholds)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(rows)} predicted -> {args.out} and {meta}")
    for f, why in failed:
        print(f"error: cannot predict {f}: {why}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
