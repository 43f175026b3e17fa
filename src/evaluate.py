"""Evaluate a trained run (`python -m src.evaluate --run outputs/<run> --split test`).

Loads a checkpoint (best by default) with the run's own config, preprocessing and splits;
chooses per-class decision thresholds on the validation split (``thresholds.json``); computes
every metric with a bootstrap confidence interval (resampled by patient) at two decisions, both
labelled in ``eval-<split>/metrics.json``: the default one (probability 0.5, or the arg-max) and
the validation-chosen thresholds. Writes ``predictions.csv``, ROC / PR / calibration / confusion
figures and a Grad-CAM gallery into ``eval-<split>/`` and (re)writes ``report.html`` and
``report.md``. The trainer evaluates the best checkpoint this way at the end of every run
(``evaluate_after_training``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from src.config import Config, add_override_argument, show_progress
from src.data.splits import run_splits
from src.files import atomic_write, write_csv
from src.inference.runtime import (
    USER_ERRORS,
    LoadedRun,
    SplitOutcomes,
    load_run,
    run_thresholds,
    split_outcomes,
)
from src.reporting import plots
from src.reporting.explain import Gallery, draw_gallery, split_thumbnails
from src.reporting.report import evaluation_log, split_statistics, write_report
from src.reporting.thresholds import rule_summary, threshold_values
from src.training.curves import CURVE_FILES
from src.training.metrics import confidence_intervals
from src.training.tracking import reopen_tracker
from src.training.utils import resolve_checkpoint

DECISIONS = ("default", "validation_thresholds")


def metric_summary(run: LoadedRun, sp: SplitOutcomes, tta: bool) -> dict[str, Any]:
    """Metrics with bootstrap CIs at both decisions, and what produced them (``metrics.json``)."""
    e, task = run.cfg.evaluation, run.task
    groups = [r["patient"] for r in sp.records]
    cuts = {"default": None, "validation_thresholds": threshold_values(sp.thresholds)}
    metrics = {
        name: confidence_intervals(
            lambda w, cut=cut: task.metrics(sp.probs, sp.labels, cut, w),
            len(sp.records),
            groups,
            e.bootstrap,
            e.confidence,
            e.seed,
        )
        for name, cut in cuts.items()
    }
    by = "patient" if len(set(groups)) < len(groups) else "scan (one scan per patient)"
    return {
        "run": run.run_dir.name,
        "split": sp.split,
        "checkpoint": str(run.checkpoint),
        "epoch": run.ckpt.get("epoch"),
        "tta": tta,
        "task": task.kind,
        "n_scans": len(sp.records),
        "n_patients": len(set(groups)),
        "bootstrap": {
            "replicates": e.bootstrap,
            "confidence": e.confidence,
            "seed": e.seed,
            "resampled_by": by,
        },
        "decisions": {
            "default": task.default_decision,
            "validation_thresholds": rule_summary(sp.thresholds),
        },
        "metrics": metrics,
        "thresholds": sp.thresholds,
    }


def write_predictions(run: LoadedRun, sp: SplitOutcomes, path: Path) -> None:
    """One row per scan: probabilities, decisions at the validation thresholds, truth."""
    names = run.task.output_names
    rows = [
        {"id": r["id"], "patient": r["patient"]}
        | {f"prob/{n}": f"{p:.6f}" for n, p in zip(names, sp.probs[i], strict=True)}
        | {f"pred/{n}": int(v) for n, v in zip(names, sp.decided[i], strict=True)}
        | {f"true/{n}": int(v) for n, v in zip(names, sp.truth[i], strict=True)}
        for i, r in enumerate(sp.records)
    ]
    write_csv(path, rows)


def make_figures(run: LoadedRun, sp: SplitOutcomes, out: Path) -> dict[str, Any]:
    """Training curves (the run folder's), ROC, PR, calibration and confusion figures, the
    Grad-CAM gallery; with the ECE per class."""
    names = run.task.output_names
    curves = [run.run_dir / name for name in CURVE_FILES]
    figures = {p.stem.replace("_", " "): p for p in curves if p.is_file()}
    figures["ROC curves"] = plots.plot_roc(sp.probs, sp.truth, names, out / "roc.png")
    figures["Precision-recall curves"] = plots.plot_pr(sp.probs, sp.truth, names, out / "pr.png")
    figures["Calibration"], ece = plots.plot_calibration(
        sp.probs, sp.truth, names, out / "calibration.png"
    )
    tables = run.task.confusion_tables(sp.truth, sp.decided)
    figures["Confusion"] = plots.plot_confusion(tables, out / "confusion.png")
    gallery = Gallery([], "", {})
    if run.cfg.evaluation.gradcam_per_group > 0:
        gallery = draw_gallery(run, sp, out, run.cfg.evaluation.gradcam_per_group)
    return {
        "figures": figures,
        "ece": ece,
        "gallery": gallery.paths,
        "cam_method": gallery.method,
        "overlays": gallery.overlays,
    }


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    checkpoint: str = "best",
    tta: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate, write ``eval-<split>/`` and (with ``evaluation.report``) the figures and the
    run report; log them to the run's W&B run when its config tracks. Returns the summary."""
    run = load_run(run_dir, checkpoint, overrides)
    parts = run_splits(run.cfg, run.run_dir, run.task)
    thresholds = run_thresholds(
        run, tta, fresh=True, parts=parts
    )  # chosen on val for this checkpoint
    sp = split_outcomes(run, split, tta, thresholds, parts)
    out = run.run_dir / f"eval-{split}"
    out.mkdir(exist_ok=True)
    summary = metric_summary(run, sp, tta)
    write_predictions(run, sp, out / "predictions.csv")
    summary["folder"] = str(out)
    if run.cfg.evaluation.report:
        context = make_figures(run, sp, out)
        summary["ece"] = context["ece"]
        context |= summary | {
            "config": run.cfg,
            "class_names": run.task.output_names,
            "split_table": split_statistics(parts, run.task),
        }
        summary["report"] = str(write_report(run.run_dir, context))
        log_evaluation(run, sp, context)
    with atomic_write(out / "metrics.json") as fh:
        json.dump(summary, fh, indent=1, default=float)
    return summary


def log_evaluation(run: LoadedRun, sp: SplitOutcomes, context: dict[str, Any]) -> None:
    """The predictions table, curves and figures, and ``report.html``, to the run's W&B run
    (continued by its id) when its config tracks."""
    tracker = reopen_tracker(run.cfg, run.run_dir, run.ckpt.get("wandb_run_id", ""))
    if tracker is None or not tracker.active:
        return
    thumbnails = split_thumbnails(run, sp.records, show_progress(run.cfg))
    tracker.log_evaluation(evaluation_log(context, sp, run.task, thumbnails, context["overlays"]))
    tracker.save_files([run.run_dir / "report.html"])
    tracker.finish()


def evaluate_after_training(cfg: Config, run_dir: Path) -> dict[str, Any] | None:
    """The end of a training run (``evaluation.report``): the best checkpoint (else the final
    one) on the test split (validation when there is none, or with ``train.eval_test: false``);
    a failure only warns, the run itself is complete."""
    if not cfg.evaluation.report:
        return None
    try:
        splits = json.loads((run_dir / "splits.json").read_text())
        split = "test" if splits.get("test") and cfg.train.eval_test else "val"
        try:
            which = str(resolve_checkpoint(run_dir, "best"))
        except USER_ERRORS:
            which = "final"
        return evaluate_run(run_dir, split, which)
    except Exception as err:  # the run itself is complete: a report failure must not lose it
        warnings.warn(
            f"run evaluation not written ({type(err).__name__}: {err}); the run is complete; "
            f"retry with `python -m src.evaluate --run {run_dir}`",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{summary['split']} split, {summary['n_scans']} scans, {summary['checkpoint']}"]
    keys = ("roc_auc_macro", "f1_macro", "sensitivity_macro", "specificity_macro", "accuracy")
    for decision in DECISIONS:
        lines.append(f" at {decision.replace('_', ' ')}: {summary['decisions'][decision]}")
        for key in keys:
            v = summary["metrics"][decision].get(key)
            if v is not None:
                lines.append(f"  {key:20s} {v['value']:.4f}  [{v['lo']:.4f}, {v['hi']:.4f}]")
    lines.append(f"metrics: {summary['folder']}/metrics.json")
    if "report" in summary:
        lines.append(f"report: {summary['report']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run folder, e.g. outputs/ct-20261121-101500")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--checkpoint", default="best", help="best, last, final or a checkpoint path")
    ap.add_argument(
        "--tta", action="store_true", help="average over the flips training used (none if none)"
    )
    add_override_argument(ap, "evaluation.bootstrap=2000 (changes the run's own settings)")
    args = ap.parse_args(argv)
    try:
        summary = evaluate_run(args.run, args.split, args.checkpoint, args.tta, args.set)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
