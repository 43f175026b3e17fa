"""Train a classifier from a YAML config (`python -m src.training.trainer --config FILE`).

``train_model`` is the whole run from a config: ``fit`` (build, then for each epoch
``train_epoch`` -> ``validate_epoch`` -> early stopping -> checkpoints -> metrics.csv, curves and
W&B), then the evaluation of the best checkpoint and the run report (``src.evaluate``).
``--resume`` continues the latest run exactly. ``--folds all`` (or ``--fold I``) trains the folds
of the k-fold split into one group folder (``<group>/fold_K``), then evaluates the group: its
out-of-fold predictions and the ensemble of its folds (``src.evaluate``). This module is the
trainer's command-line entry point: it sits above evaluation and reporting, and nothing in
``src`` imports it.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from src.config import (
    Config,
    ConfigError,
    add_override_argument,
    config_to_dict,
    load_config,
    save_config,
    show_progress,
)
from src.data.loader_settings import resolve_loader_settings
from src.data.loaders import build_dataset, evaluation_loader
from src.data.records import DataError, label_matrix
from src.data.splits import describe_splits, prepare_splits
from src.data.stream import EpochStream
from src.data.validate import check_training_split
from src.evaluate import evaluate_after_training, format_summary
from src.files import remove_partial_writes, write_csv
from src.models import ModelError, create_model
from src.models.registry import check_input_size, check_model_params, head_keys
from src.training import distributed as ddp
from src.training.curves import write_curves
from src.training.devices import resolve_amp, resolve_device
from src.training.faults import NonFiniteError, NonFiniteGuard
from src.training.groups import (
    check_group_config,
    fold_config,
    folds_to_train,
    resolve_group,
    unfinished_folds,
)
from src.training.loop import train_epoch, validate_epoch
from src.training.optim import build_optimization
from src.training.pretrained import Weights, freeze_backbone, load_pretrained, read_pretrained
from src.training.state import TrainingState, epoch_seed, seed_everything
from src.training.tasks import Task, build_task
from src.training.tracking import Tracker
from src.training.utils import (
    CheckpointError,
    check_resume_compatible,
    checkpoint_paths,
    find_latest_checkpoint,
    fold_folder,
    keep_epoch_copies,
    load_checkpoint,
    run_folder_name,
    runs_of,
    save_checkpoint,
    strategy_tag,
)
from src.training.watch import collapsed_classes, recall_text

USER_ERRORS = (ConfigError, DataError, ModelError, CheckpointError, NonFiniteError)


@dataclass
class Run:
    """Everything ``fit`` works with, built once by ``build_run``."""

    cfg: Config
    run_dir: Path
    task: Task
    state: TrainingState
    stream: EpochStream
    val_loader: Any
    tracker: Tracker
    guard: NonFiniteGuard
    paths: dict[str, Path]
    progress: bool

    def seed_of(self, epoch: int) -> int:
        return epoch_seed(self.cfg.train.seed, ddp.get_rank(), epoch)


def fit(cfg: Config, run_dir: Path, resume_from: Path | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says, in ``run_dir``; resume from a checkpoint when given one.
    Returns the summary: run folder, best epoch and best value of ``train.monitor``."""
    run = build_run(cfg, run_dir, resume_from)
    state, task = run.state, run.task
    for epoch in range(state.epoch, cfg.train.epochs):
        if state.early_stopped:  # a resumed run that had stopped: --set train.epochs extends it
            break
        t0 = time.perf_counter()
        seed_everything(run.seed_of(epoch))  # dropout and anything else outside the data
        run.guard.epoch = epoch + 1
        train_loss = train_epoch(state, run.stream.epoch(epoch), task, run.guard, run.progress)
        ddp.broadcast_buffers(state.model)  # every rank evaluates the statistics rank 0 saves
        row = {"epoch": epoch + 1, "step": state.step, "lr": state.lr}
        row |= {"train/loss": ddp.mean_over_ranks(train_loss)}
        row |= validate_epoch(
            state.model, run.val_loader, task, state.device, state.amp_dtype, run.progress
        )
        improved = state.end_epoch(row)
        if ddp.is_main():
            save_epoch(run, improved)
        run.tracker.log_epoch(row, state.step_rows)  # after the checkpoint: never repeated
        print(epoch_line(row, cfg, improved, time.perf_counter() - t0), flush=True)
        for name in collapsed_classes(state.history, cfg.train.watch_classes):
            warnings.warn(
                f"epoch {epoch + 1}: val recall of watched class {name!r} has been 0 for 2 "
                "epochs in a row: the model no longer predicts it",
                stacklevel=1,
            )
        if state.early_stopped:
            print(
                f"early stop: {cfg.train.monitor} did not improve for {cfg.train.patience} epochs"
            )
            break
    run.stream.close()
    ddp.barrier()  # rank 0 has written its checkpoints before any rank reads them
    final, last = run.paths["final"], run.paths["last"]
    if ddp.is_main() and last.is_file() and (state.epoch > 0 or not final.is_file()):
        save_checkpoint(load_checkpoint(last), final)
    summary = {
        "run_dir": str(run_dir),
        "best_epoch": state.stopper.best_epoch,
        f"best_{cfg.train.monitor}": state.stopper.best,
        "tracking": run.tracker.location,
    }
    run.tracker.summary(summary)
    log_best_model(run)
    run.tracker.finish()
    return summary


def log_best_model(run: Run) -> None:
    """The best checkpoint (else the final one) as a version of the run's W&B ``model``
    artifact, aliased ``best``, ``latest`` and the split strategy."""
    cfg, stopper = run.cfg, run.state.stopper
    path = run.paths["best"] if run.paths["best"].is_file() else run.paths["final"]
    if not path.is_file():
        return
    strategy = strategy_tag(cfg) or cfg.data.split.strategy
    aliases = ["best", "latest"] if path == run.paths["best"] else ["latest"]
    metadata = {
        "checkpoint": path.name,
        "monitor": cfg.train.monitor,
        "best_value": stopper.best,
        "best_epoch": stopper.best_epoch,
        "model": cfg.model.name,
        "class_names": run.task.output_names,
    }
    run.tracker.log_model({path.name: path}, [*aliases, f"split-{strategy}"], metadata)


def build_run(cfg: Config, run_dir: Path, resume_from: Path | None) -> Run:
    """Check what can be checked before any data is read, then data, model, state, tracker."""
    progress = show_progress(cfg) and ddp.is_main()
    loading = resolve_loader_settings(cfg)  # from this process's share of the node's cores
    torch.set_num_threads(loading.threads)
    task = build_task(cfg)
    check_before_data(cfg, task)
    seed_everything(cfg.train.seed)
    device = ddp.rank_device(resolve_device(cfg.train.device))
    ckpt = load_checkpoint(resume_from) if resume_from else None
    if ckpt is not None:
        check_resume_compatible(ckpt["config"], config_to_dict(cfg), resume_from)
    # read before any data; a resume restores its trained weights and never reads them
    weights = read_pretrained(cfg) if cfg.model.pretrained and ckpt is None else None
    if ddp.is_main():  # under torchrun rank 0 alone writes into the run folder
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for folder in (run_dir, run_dir / "checkpoints"):  # temp files of a killed run
            remove_partial_writes(folder)
        save_config(cfg, run_dir / "config.yaml")
    with ddp.main_first():  # rank 0 makes the phantom and splits.json; the others then read them
        reuse = ckpt is not None or not ddp.is_main()
        parts = prepare_splits(cfg, run_dir, reuse, task, progress)
    check_training_split(parts, cfg, task)  # batch size vs. the training split; absent classes
    print(describe_splits(parts, task))
    print(loading.describe())
    ddp.warm_disk_cache([parts["train"], parts["val"]], cfg, progress)
    train_ds = build_dataset(ddp.shard_records(parts["train"], cfg, True), cfg, True, progress)
    val_ds = build_dataset(ddp.shard_records(parts["val"], cfg, False), cfg, False, progress)
    val_loader = evaluation_loader(val_ds, cfg, ddp.shard_sampler(val_ds, cfg, False))
    task = build_task(cfg, label_matrix(parts["train"]))  # with the training split's loss weights
    # one loader iterator for every epoch this process runs: the workers prefetch across
    # epoch boundaries and during validation (src.data.stream)
    seed_of = functools.partial(epoch_seed, cfg.train.seed, ddp.get_rank())
    sampler = ddp.shard_sampler(train_ds, cfg, train=True)
    stream = EpochStream(train_ds, cfg, seed_of, 0, cfg.train.epochs, sampler)
    steps_per_epoch = math.ceil(stream.batches.batches_per_epoch() / cfg.train.accumulate)
    state = build_state(cfg, task, device, steps_per_epoch, weights)
    if ckpt is not None:
        resume(state, ckpt, resume_from, steps_per_epoch, run_dir)
        stream.start_at(state.epoch)
    tracker = Tracker(cfg, run_dir, state.run_id, enabled=ddp.is_main())
    state.run_id = tracker.run_id
    tracker.save_files([run_dir / "config.yaml", run_dir / "splits.json"])
    paths = checkpoint_paths(run_dir, cfg)  # last/best/final, named by the split strategy
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, paths["last"])
    return Run(cfg, run_dir, task, state, stream, val_loader, tracker, guard, paths, progress)


def check_before_data(cfg: Config, task: Task) -> None:
    """Model name and parameters, the model's depth against the input size, and the monitored
    metric: mistakes found here cost no data loading."""
    check_model_params(cfg.model.name, cfg.model.params)
    check_input_size(
        cfg.model.name, cfg.spatial_dims, cfg.in_channels, cfg.data.spatial_size,
        **cfg.model.params,
    )  # fmt: skip
    logged = {f"val/{m}" for m in [*task.metric_names, "loss"]} | {"train/loss"}
    if cfg.train.monitor not in logged:
        heads = sorted(m for m in logged if "/" not in m.split("/", 1)[1])
        raise ConfigError(
            f"train.monitor: {cfg.train.monitor!r} is not a logged metric; e.g. {', '.join(heads)}"
        )


def build_state(
    cfg: Config,
    task: Task,
    device: torch.device,
    steps_per_epoch: int,
    weights: Weights | None = None,
) -> TrainingState:
    """A fresh training state: the model (pretrained ``weights`` loaded when given, the
    backbone frozen as ``model.freeze`` says; DDP under torchrun), AdamW with its schedule (head
    and backbone groups under ``model.pretrained``), the gradient scaler (fp16 only) and early
    stopping."""
    args = (
        cfg.model.name,
        cfg.spatial_dims,
        cfg.in_channels,
        task.num_outputs,
        cfg.data.spatial_size,
    )
    model = create_model(*args, **cfg.model.params)
    head = head_keys(*args, **cfg.model.params) if cfg.model.pretrained else None
    if head is not None and weights is not None:
        summary = load_pretrained(model, cfg, head, weights)
        if ddp.is_main():
            print(summary)
    if head is not None and cfg.model.freeze == "backbone":
        freeze_backbone(model, head)
    model = ddp.distribute_model(model.to(device), cfg, device)  # DDP under torchrun
    optimizer, scheduler = build_optimization(cfg, model, steps_per_epoch, head)
    amp_dtype = resolve_amp(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainingState(cfg, model, optimizer, scheduler, scaler, device, amp_dtype)


def resume(
    state: TrainingState, ckpt: dict[str, Any], source: Path, steps_per_epoch: int, run_dir: Path
) -> None:
    """Load the checkpoint into ``state``; drop ``metrics.csv`` rows newer than it."""
    state.load_state_dict(ckpt, str(source))
    if state.step != state.epoch * steps_per_epoch:  # resumed with another world or batch size
        state.step = ddp.realign_schedule(state.scheduler, state.epoch * steps_per_epoch)
    if ddp.is_main():
        write_csv(run_dir / "metrics.csv", metrics_rows(state.history))
    print(f"resumed from {source} at epoch {state.epoch}")


def metrics_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``metrics.csv`` rows: one per epoch, floats to 6 significant digits."""
    return [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in history]


def save_epoch(run: Run, improved: bool) -> None:
    """After an epoch (rank 0): last (and best) checkpoint, epoch copies, metrics.csv, curves."""
    cfg, state, paths = run.cfg, run.state, run.paths
    checkpoint = state.state_dict()
    save_checkpoint(checkpoint, paths["last"])
    keep_epoch_copies(paths["last"], state.epoch, cfg.checkpoint.keep_last_n)
    if improved and cfg.checkpoint.save_best:
        save_checkpoint(checkpoint, paths["best"])
    write_csv(run.run_dir / "metrics.csv", metrics_rows(state.history))
    write_curves(state.history, run.run_dir, run.task.output_names, cfg.train.monitor)


def epoch_line(row: dict[str, Any], cfg: Config, improved: bool, seconds: float) -> str:
    keys = ["train/loss", "val/loss", "val/roc_auc_macro", "val/accuracy", cfg.train.monitor]
    shown = dict.fromkeys(k for k in keys if k in row)
    parts = [f"{k} {row[k]:.4f}" for k in shown]
    mark = "  *best" if improved else ""
    return (
        f"epoch {row['epoch']:>3}/{cfg.train.epochs}  "
        + "  ".join(parts)
        + f"  lr {row['lr']:.2e}  {seconds:.1f}s{mark}"
        + recall_text(row, cfg.class_names)
    )


def train_model(cfg: Config, run_dir: Path, resume_from: Path | None = None) -> dict[str, Any]:
    """The whole run from a config: ``fit``, then (rank 0) the evaluation of the best
    checkpoint on the test split (else validation) with the run report; prints where the
    outputs went and returns the summary."""
    summary = fit(cfg, run_dir, resume_from)
    if ddp.is_main():
        summary["evaluation"] = evaluate_after_training(cfg, run_dir)
        print_summary(summary, cfg, run_dir)
    return summary


def print_summary(summary: dict[str, Any], cfg: Config, run_dir: Path) -> None:
    best = summary[f"best_{cfg.train.monitor}"]
    names = ", ".join(p.name for p in checkpoint_paths(run_dir, cfg).values())
    lines = [
        "",
        f"run folder:   {run_dir}",
        f"best {cfg.train.monitor} = {best:.4f} at epoch {summary['best_epoch']}",
        f"checkpoints:  {run_dir / 'checkpoints'} ({names})",
        f"metrics:      {run_dir / 'metrics.csv'} (and loss / metric / recall curves)",
    ]
    evaluation = summary.get("evaluation")
    if evaluation:
        auc = evaluation["metrics"]["default"]["roc_auc_macro"]
        lines.append(
            f"{evaluation['split']} (best checkpoint): roc_auc_macro {auc['value']:.4f} "
            f"[{auc['lo']:.4f}, {auc['hi']:.4f}] -> {evaluation['folder']}"
        )
        if evaluation.get("report"):
            lines.append(f"report:       {evaluation['report']}")
    lines.append(f"tracking:     {summary['tracking']}")
    print("\n".join(lines))


def train_group(
    cfg: Config, group_dir: Path, folds: list[int], resume: bool
) -> dict[str, Any] | None:
    """Train ``folds`` of the k-fold split into ``group_dir/fold_K`` (a finished fold is skipped,
    an unfinished one continues from its last checkpoint under ``resume``); once every fold
    has finished, evaluate the group (out-of-fold predictions, ensemble on the test split).
    Returns the evaluation's summary, None while folds remain."""
    group_cfg = fold_config(cfg, 0, group_dir.name)
    if ddp.is_main():
        check_group_config(group_cfg, group_dir)
    ddp.barrier()
    n_folds = cfg.data.split.n_folds
    for k in folds:
        fold_cfg, fold_dir = fold_config(cfg, k, group_dir.name), fold_folder(group_dir, k)
        if checkpoint_paths(fold_dir, fold_cfg)["final"].is_file():
            print(f"fold {k}/{n_folds}: finished before, skipped")
            continue
        latest = find_latest_checkpoint(fold_dir)
        if latest is not None and not resume:
            raise ConfigError(
                f"{fold_dir} already holds checkpoints; add --resume to continue the group"
            )
        print(f"fold {k}/{n_folds}: {fold_dir}", flush=True)
        fit(fold_cfg, fold_dir, latest)
    waiting = unfinished_folds(cfg, group_dir)
    if waiting:
        print(
            f"group {group_dir}: folds {waiting} still to train; the group is evaluated when "
            "the last one finishes"
        )
        return None
    if not ddp.is_main():
        return None
    summary = evaluate_after_training(group_cfg, group_dir)
    if summary:
        print(format_summary(summary))
    return summary


def resolve_run(args: argparse.Namespace, cfg: Config) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from (None for a fresh run)."""
    out = Path(cfg.logging.output_dir)
    stem = Path(args.config).stem
    if not args.resume:
        run_dir = out / run_folder_name(cfg, stem, datetime.now())
        if find_latest_checkpoint(run_dir) is not None:
            raise ConfigError(
                f"logging.run_name: {run_dir} already holds checkpoints; add --resume to "
                "continue it, or choose another run name"
            )
        return run_dir, None
    if args.resume != "latest":
        target = Path(args.resume)
        if target.is_file():
            return target.parent.parent, target
        run_dir = target
    elif cfg.logging.run_name:
        run_dir = out / run_folder_name(cfg, stem)
    else:
        runs = [p for p in runs_of(out, cfg, stem) if find_latest_checkpoint(p)]
        if not runs:
            raise CheckpointError(
                f"--resume: no run of {args.config} with a checkpoint under {out}/; "
                "start one without --resume"
            )
        run_dir = runs[-1]
    latest = find_latest_checkpoint(run_dir)
    if latest is None:
        raise CheckpointError(
            f"--resume: no checkpoint in {run_dir}/checkpoints; start the run without --resume"
        )
    return run_dir, latest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m src.training.trainer", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--config", required=True, help="YAML config, e.g. configs/ct.yaml or ct")
    add_override_argument(ap, "optim.lr=3e-4 train.epochs=20")
    ap.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN_OR_CHECKPOINT",
        help="continue the latest run of this config, or the given run folder / checkpoint",
    )
    folds = ap.add_mutually_exclusive_group()
    folds.add_argument(
        "--folds",
        choices=["all"],
        help="train every fold of the k-fold split (data.split.n_folds) into one group",
    )
    folds.add_argument(
        "--fold", type=int, help="train fold I of the group named by logging.run_name"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        ddp.init_distributed(cfg.train.device)  # under torchrun; a single process otherwise
        if args.folds or args.fold is not None:
            folds = folds_to_train(cfg, bool(args.folds), args.fold)
            group = ddp.run_on_main(lambda: resolve_group(cfg, args.config, args.resume, args.fold))
            train_group(cfg, group, folds, bool(args.resume))
            return 0
        run_dir, resume_from = ddp.run_on_main(lambda: resolve_run(args, cfg))  # one run folder
        train_model(cfg, run_dir, resume_from)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ddp.close_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
