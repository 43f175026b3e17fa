"""Evaluate a trained run (`python -m src.evaluate --run outputs/<run> --split test`).

Loads a checkpoint (best by default) with the run's own config, preprocessing and splits;
chooses per-class decision thresholds on the validation split (``thresholds.json``); computes
every metric with a bootstrap confidence interval (resampled by patient) at two decisions, both
labelled in ``eval-<split>/metrics.json``: the default one (probability 0.5, or the arg-max) and
the validation-chosen thresholds. Writes ``predictions.csv``, ROC / PR / calibration / confusion
figures and a Grad-CAM gallery into ``eval-<split>/`` and (re)writes ``report.html`` and
``report.md``. The trainer evaluates the best checkpoint this way at the end of every run
(``evaluate_after_training``).

An ensemble evaluates the same way (``--run GROUP``, or ``--run A B C --out FOLDER``), beside
each of its members at the same thresholds. A cross-validation group has no validation split of
its own: each pool scan is predicted by the fold that validated on it (``oof_predictions.csv``),
its thresholds are chosen on those out-of-fold predictions, and their metrics (with CIs) and
curves go to ``eval-oof/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

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
from src.reporting.thresholds import (
    choose_thresholds,
    rule_summary,
    save_thresholds,
    threshold_values,
)
from src.training.curves import CURVE_FILES
from src.training.metrics import confidence_intervals
from src.training.tracking import reopen_tracker
from src.training.utils import group_folds, resolve_checkpoint

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
    each = run.members or [run]
    return {
        "run": run.run_dir.name,
        "split": sp.split,
        "checkpoint": ", ".join(str(m.checkpoint) for m in each),
        "epoch": ", ".join(str(m.ckpt.get("epoch")) for m in each),
        "members": [str(m.run_dir) for m in run.members],
        "tta": tta,
        "task": task.kind,
        "n_scans": len(sp.records),
        "n_patients": len(set(groups)),
        "ignored_labels": task.ignored_counts(sp.labels),  # unknown cells, left out per finding
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


def write_predictions(
    run: LoadedRun, sp: SplitOutcomes, path: Path, folds: list[int] | None = None
) -> None:
    """One row per scan: (the fold that predicted it,) probabilities, decisions at the
    validation thresholds, truth (blank where unknown)."""
    names = run.task.output_names
    rows = [
        {"id": r["id"], "patient": r["patient"]}
        | ({"fold": folds[i]} if folds else {})
        | {f"prob/{n}": f"{p:.6f}" for n, p in zip(names, sp.probs[i], strict=True)}
        | {f"pred/{n}": int(v) for n, v in zip(names, sp.decided[i], strict=True)}
        | {f"true/{n}": "" if v != v else int(v) for n, v in zip(names, sp.truth[i], strict=True)}
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
    gallery, n = Gallery([], "", {}), run.cfg.evaluation.gradcam_per_group
    if n > 0 and not run.members:  # maps explain one model; an ensemble's members differ
        gallery = draw_gallery(run, sp, out, n)
    return {
        "figures": figures,
        "ece": ece,
        "gallery": gallery.paths,
        "cam_method": gallery.method,
        "overlays": gallery.overlays,
    }


def evaluate_out_of_fold(run: LoadedRun, tta: bool) -> dict[str, Any]:
    """A group's out-of-fold evaluation: each fold predicts its own validation split (the pool
    scans it did not train on); ``oof_predictions.csv``, ``thresholds.json`` chosen on them,
    and ``eval-oof/`` (metrics with CIs, ROC / PR / calibration). Returns the summary."""
    each = [split_outcomes(m, "val", tta) for m in run.members]
    probs = np.concatenate([o.probs for o in each])
    truth = np.concatenate([o.truth for o in each])
    thresholds = choose_thresholds(probs, truth, run.task, run.cfg.evaluation, "out-of-fold")
    save_thresholds(thresholds, run.run_dir)
    sp = SplitOutcomes(
        "out-of-fold",
        [r for o in each for r in o.records],
        probs,
        np.concatenate([o.labels for o in each]),
        truth,
        run.task.decisions(probs, threshold_values(thresholds)),
        thresholds,
    )
    folds = [k for k, o in enumerate(each) for _ in o.records]
    write_predictions(run, sp, run.run_dir / "oof_predictions.csv", folds)
    out = run.run_dir / "eval-oof"
    out.mkdir(exist_ok=True)
    summary = metric_summary(run, sp, tta) | {"folder": str(out), "sp": sp, "each": each}
    names = run.task.output_names
    summary["figures"] = {
        "Out-of-fold ROC curves": plots.plot_roc(probs, truth, names, out / "roc.png"),
        "Out-of-fold precision-recall curves": plots.plot_pr(probs, truth, names, out / "pr.png"),
        "Out-of-fold calibration": plots.plot_calibration(
            probs, truth, names, out / "calibration.png"
        )[0],
    }
    with atomic_write(out / "metrics.json") as fh:
        kept = {k: v for k, v in summary.items() if k not in ("sp", "each", "figures")}
        json.dump(kept, fh, indent=1, default=float)
    return summary


def member_metrics(
    run: LoadedRun,
    split: str,
    tta: bool,
    thresholds: dict[str, Any],
    parts: dict[str, list[dict[str, Any]]],
    each: list[SplitOutcomes] | None = None,
) -> dict[str, Any]:
    """Metrics with CIs of each member of an ensemble on ``split`` at the ensemble's
    thresholds; ``each``: outcomes already predicted (out of fold: each fold's own)."""
    each = each or [split_outcomes(m, split, tta, thresholds, parts) for m in run.members]
    for o in each:  # out-of-fold outcomes were first decided at 0.5
        o.decided, o.thresholds = (
            run.task.decisions(o.probs, threshold_values(thresholds)),
            thresholds,
        )
    return {
        m.run_dir.name: metric_summary(m, o, tta)["metrics"]
        for m, o in zip(run.members, each, strict=True)
    }


def evaluate_run(
    run_dir: str | Path | list[str],
    split: str = "test",
    checkpoint: str = "best",
    tta: bool = False,
    overrides: list[str] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate, write ``eval-<split>/`` and (with ``evaluation.report``) the figures and the
    run report; log them to the run's W&B run when its config tracks. Returns the summary.
    An ensemble (a group, or several runs with ``out_dir`` for its folder) is evaluated beside
    each of its members; a group's thresholds come from its out-of-fold predictions, and a
    group without a test split is evaluated out of fold only."""
    run = load_run(run_dir, checkpoint, overrides, out_dir)
    parts = run_splits(run.cfg, run.run_dir, run.task)
    oof = None
    if run.members and not parts["val"]:  # a group: the folds' validation splits are the pool
        oof = evaluate_out_of_fold(run, tta)
        thresholds = oof["thresholds"]
        if not parts[split]:
            split, sp = "out-of-fold", oof["sp"]
    else:
        thresholds = run_thresholds(run, tta, fresh=True, parts=parts)  # on val, this checkpoint
    if split != "out-of-fold":
        sp = split_outcomes(run, split, tta, thresholds, parts)
    out = Path(oof["folder"]) if split == "out-of-fold" else run.run_dir / f"eval-{split}"
    out.mkdir(exist_ok=True)
    summary = metric_summary(run, sp, tta)
    if split != "out-of-fold":
        write_predictions(run, sp, out / "predictions.csv")
    summary["folder"] = str(out)
    if run.members:
        each = oof["each"] if split == "out-of-fold" else None
        summary["per_member"] = member_metrics(run, split, tta, thresholds, parts, each)
    if oof is not None:
        summary["out_of_fold"] = {k: oof[k] for k in ("metrics", "n_scans", "folder")}
    if run.cfg.evaluation.report:
        context = make_figures(run, sp, out)
        summary["ece"] = context["ece"]
        if oof is not None:
            context["figures"] |= oof["figures"]
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
    (continued by its id) when its config tracks; an ensemble's runs track themselves."""
    if run.members:
        return
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
        if group_folds(run_dir):  # a group: the ensemble on the test split, and out of fold
            return evaluate_run(run_dir, "test" if cfg.train.eval_test else "val")
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
    ap.add_argument(
        "--run",
        required=True,
        nargs="+",
        help="run folder, group folder (its folds' ensemble) or several runs (with --out)",
    )
    ap.add_argument("--out", default=None, help="the folder of an ensemble of several runs")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--checkpoint", default="best", help="best, last, final or a checkpoint path")
    ap.add_argument(
        "--tta", action="store_true", help="average over the flips training used (none if none)"
    )
    add_override_argument(ap, "evaluation.bootstrap=2000 (changes the run's own settings)")
    args = ap.parse_args(argv)
    try:
        run = args.run[0] if len(args.run) == 1 else args.run
        summary = evaluate_run(run, args.split, args.checkpoint, args.tta, args.set, args.out)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
