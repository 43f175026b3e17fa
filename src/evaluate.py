"""Evaluate a trained run (`python -m src.evaluate --run outputs/<run> --split test`).

Loads a checkpoint (best by default) with the run's own config, preprocessing and splits;
chooses per-class decision thresholds on the validation split (``thresholds.json``); computes
every metric with bootstrap confidence intervals (resampled by patient), ROC / PR /
calibration / confusion figures and a Grad-CAM gallery into ``<run>/eval-<split>/``; and
(re)writes ``<run>/report.html`` and ``report.md``. The trainer calls ``report_after_training``
at the end of every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.config import Config
from src.data.records import DataError
from src.inference.runtime import (
    USER_ERRORS,
    LoadedRun,
    config_with_overrides,
    load_run,
    one_hot_labels,
    predict_records,
    resolve_checkpoint,
    run_splits,
)
from src.reporting import plots
from src.reporting.bootstrap import metrics_with_ci
from src.reporting.explain import draw_gallery
from src.reporting.report import log_to_wandb, split_statistics, write_report
from src.reporting.thresholds import (
    choose_thresholds,
    load_thresholds,
    rule_summary,
    save_thresholds,
    task_class_names,
    threshold_vector,
)
from src.training.run_names import find_checkpoint
from src.training.tracking import Tracker
from src.training.utils import load_checkpoint


@dataclass
class SplitPredictions:
    """A run's predictions on one split, with the decisions its thresholds make."""

    run: LoadedRun
    split: str
    parts: dict[str, list[dict[str, Any]]]
    records: list[dict[str, Any]]
    names: list[str]
    probs: np.ndarray
    onehot: np.ndarray
    decided: np.ndarray
    thresholds: dict[str, Any]


def decide(probs: np.ndarray, thresholds: dict[str, Any], cfg: Config) -> np.ndarray:
    """0/1 decisions (N, C): per-class thresholds, or the arg-max for multi-class."""
    if cfg.data.task == "multiclass":
        return np.eye(probs.shape[1])[probs.argmax(1)]
    return (probs >= threshold_vector(thresholds, task_class_names(cfg))).astype(float)


def split_predictions(
    run: LoadedRun, split: str, tta: bool = False, fresh_thresholds: bool = True
) -> SplitPredictions:
    """Predict ``split``; thresholds are chosen on validation (or read from the run folder)."""
    cfg, names = run.cfg, task_class_names(run.cfg)
    parts = run_splits(cfg, run.run_dir)
    if not parts[split]:
        raise DataError(f"--split: the run {run.run_dir} has no {split} split; use --split val")
    thresholds = None if fresh_thresholds else load_thresholds(run.run_dir)
    val = None
    if thresholds is None:
        val = predict_records(run, parts["val"], tta)
        onehot = one_hot_labels(val[1], cfg, len(names))
        thresholds = choose_thresholds(val[0], onehot, cfg) | {"checkpoint": str(run.checkpoint)}
        save_thresholds(thresholds, run.run_dir)
    probs, labels = val if split == "val" and val else predict_records(run, parts[split], tta)
    onehot = one_hot_labels(labels, cfg, len(names))
    decided = decide(probs, thresholds, cfg)
    return SplitPredictions(
        run, split, parts, parts[split], names, probs, onehot, decided, thresholds
    )


def evaluation_inputs(run_dir: str | Path, split: str, checkpoint: str = "best"):
    """(run, records, probs, onehot, decided, names) for the Grad-CAM command."""
    sp = split_predictions(load_run(run_dir, checkpoint), split, fresh_thresholds=False)
    return sp.run, sp.records, sp.probs, sp.onehot, sp.decided, sp.names


def write_predictions(sp: SplitPredictions, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["id", "patient"]
            + [f"prob/{n}" for n in sp.names]
            + [f"pred/{n}" for n in sp.names]
            + [f"true/{n}" for n in sp.names]
        )
        for i, r in enumerate(sp.records):
            w.writerow(
                [
                    r["id"],
                    r["patient"],
                    *(f"{p:.6f}" for p in sp.probs[i]),
                    *sp.decided[i].astype(int),
                    *sp.onehot[i].astype(int),
                ]
            )


def make_figures(sp: SplitPredictions, out: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """ROC, PR, calibration and confusion figures of the split; and the ECE per class."""
    multiclass = sp.run.cfg.data.task == "multiclass"
    figs = {
        "ROC curves": plots.plot_roc(sp.probs, sp.onehot, sp.names, out / "roc.png"),
        "Precision-recall curves": plots.plot_pr(sp.probs, sp.onehot, sp.names, out / "pr.png"),
    }
    figs["Calibration"], ece = plots.plot_calibration(
        sp.probs, sp.onehot, sp.names, out / "calibration.png"
    )
    title = "Confusion matrix" if multiclass else "Per-finding 2x2 tables"
    figs[title] = plots.plot_confusion(
        sp.onehot, sp.decided, sp.names, out / "confusion.png", multiclass
    )
    return figs, ece


def metric_summary(sp: SplitPredictions, tta: bool) -> dict[str, Any]:
    """Metrics with bootstrap CIs and what produced them (``metrics.json``)."""
    run, e = sp.run, sp.run.cfg.evaluation
    groups = [r["patient"] for r in sp.records]
    metrics = metrics_with_ci(
        sp.probs,
        sp.onehot,
        sp.names,
        threshold_vector(sp.thresholds, sp.names),
        run.cfg.data.task == "multiclass",
        groups,
        e.bootstrap,
        e.confidence,
        e.seed,
    )
    by = "patient" if len(set(groups)) < len(groups) else "scan (one scan per patient)"
    return {
        "run": run.run_dir.name,
        "split": sp.split,
        "checkpoint": str(run.checkpoint),
        "epoch": run.ckpt.get("epoch"),
        "tta": tta,
        "task": run.cfg.data.task,
        "n_scans": len(sp.records),
        "n_patients": len(set(groups)),
        "bootstrap": {
            "replicates": e.bootstrap,
            "confidence": e.confidence,
            "seed": e.seed,
            "resampled_by": by,
        },
        "metrics": metrics,
        "thresholds": sp.thresholds,
        "threshold_rule": rule_summary(sp.thresholds),
    }


def all_figures(sp: SplitPredictions, out: Path) -> dict[str, Any]:
    """Training curves, evaluation figures and the Grad-CAM gallery, with the ECE per class."""
    figures, ece = make_figures(sp, out)
    curves = plots.plot_training_curves(sp.run.run_dir / "metrics.csv", out / "training_curves.png")
    if curves is not None:
        figures = {"Training curves": curves} | figures
    gallery, cam_method, n = [], "", sp.run.cfg.evaluation.gradcam_per_group
    if n > 0:
        gallery, cam_method = draw_gallery(
            sp.run, sp.records, sp.probs, sp.onehot, sp.decided, sp.names, out, n
        )
    return {"figures": figures, "ece": ece, "gallery": gallery, "cam_method": cam_method}


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    checkpoint: str = "best",
    tta: bool = False,
    overrides: list[str] | None = None,
    tracker=None,
) -> dict[str, Any]:
    """Evaluate, write ``eval-<split>/`` and the run report; returns the summary written."""
    run = load_run(run_dir, checkpoint, overrides)
    sp = split_predictions(run, split, tta)
    out = run.run_dir / f"eval-{split}"
    out.mkdir(exist_ok=True)
    summary = metric_summary(sp, tta)
    figures = all_figures(sp, out)
    summary["ece"] = figures["ece"]
    write_predictions(sp, out / "predictions.csv")
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    context = (
        summary
        | figures
        | {
            "config": run.cfg,
            "class_names": sp.names,
            "split_table": split_statistics(sp.parts, run.cfg),
        }
    )
    summary["report"] = str(write_report(run.run_dir, context))
    log_to_wandb(tracker, context, sp.probs, sp.onehot)
    return summary


def report_after_training(cfg: Config, run_dir: Path, tracker=None) -> Path | None:
    """The trainer's last step: evaluate and write the report; a failure only warns."""
    if not cfg.evaluation.report:
        return None
    try:
        splits = json.loads((run_dir / "splits.json").read_text())
        split = "test" if splits.get("test") else "val"
        which = "best" if find_checkpoint(run_dir, "best") else "final"
        summary = evaluate_run(run_dir, split, which, tracker=tracker)
        print(f"report:       {summary['report']}")
        return Path(summary["report"])
    except Exception as err:  # the run itself is complete: a report failure must not lose it
        warnings.warn(
            f"run report not written ({type(err).__name__}: {err}); the run is complete; "
            f"retry with `python -m src.evaluate --run {run_dir}`",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run folder, e.g. outputs/ct-20261121-101500")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--checkpoint", default="best", help="best, last, final or a checkpoint path")
    ap.add_argument("--tta", action="store_true", help="average over flips (test-time aug.)")
    ap.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override evaluation settings, e.g. evaluation.bootstrap=2000",
    )
    args = ap.parse_args(argv)
    tracker = None
    try:
        tracker = open_tracker(args.run, args.checkpoint, args.set)
        summary = evaluate_run(args.run, args.split, args.checkpoint, args.tta, args.set, tracker)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if tracker is not None:
            tracker.finish()
    print(format_summary(summary))
    return 0


def open_tracker(run_dir: str, checkpoint: str, overrides: list[str]) -> Tracker | None:
    """The run's W&B run (continued by id) when W&B is on in its config, else None."""
    ckpt = load_checkpoint(resolve_checkpoint(Path(run_dir), checkpoint))
    cfg = config_with_overrides(ckpt["config"] | {"evaluation": {}}, overrides)
    if cfg.logging.wandb.mode == "disabled":
        return None
    return Tracker(cfg, Path(run_dir), ckpt.get("wandb_run_id", ""))


def format_summary(summary: dict[str, Any]) -> str:
    m = summary["metrics"]
    lines = [f"{summary['split']} split, {summary['n_scans']} scans, {summary['checkpoint']}"]
    for key in ("roc_auc_macro", "f1_macro", "sensitivity_macro", "specificity_macro", "accuracy"):
        v = m[key]
        lines.append(f"  {key:20s} {v['value']:.4f}  [{v['lo']:.4f}, {v['hi']:.4f}]")
    lines += [f"  {summary['threshold_rule']}", f"report: {summary['report']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
