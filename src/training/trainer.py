"""Train a classifier from a YAML config (`python -m src.training.trainer --config FILE`).

``fit`` reads top to bottom: build -> for each epoch: train_epoch -> validate_epoch -> early
stopping -> checkpoints -> metrics.csv and W&B. ``--resume`` continues the latest run exactly.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from src.config import Config, ConfigError, config_to_dict, load_config, save_config
from src.data.loaders import build_dataset, build_loader
from src.data.pipeline import prepare_splits
from src.data.records import DataError, label_matrix
from src.data.splits import describe_splits
from src.data.stream import EpochStream
from src.data.tuning import resolve_loader_settings
from src.data.validate import check_training_split
from src.evaluate import report_after_training
from src.models import ModelError, create_model
from src.models.registry import check_model_params
from src.reporting.curves import write_curves
from src.training import distributed as ddp
from src.training.faults import NonFiniteError, NonFiniteGuard
from src.training.loop import train_epoch, validate_epoch
from src.training.run_names import checkpoint_paths, run_folder_name, runs_of
from src.training.tasks import Task, build_task
from src.training.tracking import Tracker
from src.training.utils import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    EarlyStopping,
    atomic_torch_save,
    atomic_write_text,
    find_latest_checkpoint,
    keep_epoch_copies,
    load_checkpoint,
    load_model_state,
    remove_partial_writes,
    resolve_amp,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    unwrap_model,
    warmup_cosine,
)
from src.training.watch import collapsed_classes, recall_text

USER_ERRORS = (ConfigError, DataError, ModelError, CheckpointError, NonFiniteError)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of everything random in an epoch: a resumed run repeats it, and under torchrun
    each rank draws its own augmentation."""
    return seed * 100_003 + epoch + 1_000_003 * rank


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    """``metrics.csv``: one row per epoch, every metric; rewritten whole, atomically."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(buf.getvalue(), path)


def check_monitor(cfg: Config, task: Task) -> None:
    """Fail before training when ``train.monitor`` names a metric the task never logs."""
    n, k = 4, task.num_outputs
    logits = torch.linspace(-1, 1, n * k).reshape(n, k)
    labels = torch.tensor([[0.0], [1.0], [0.0], [1.0]]).expand(n, k).clone()
    if cfg.data.task == "multiclass":
        labels = torch.arange(n) % k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {f"val/{m}" for m in task.metrics(logits, labels)} | {"val/loss", "train/loss"}
    if cfg.train.monitor not in names:
        heads = sorted(m for m in names if "/" not in m[4:])
        raise ConfigError(
            f"train.monitor: {cfg.train.monitor!r} is not a logged metric; e.g. {', '.join(heads)}"
        )


def make_checkpoint(state: dict[str, Any], cfg: Config, model: nn.Module, **objs) -> dict:
    """Everything a resume needs, as plain data."""
    return {
        "format_version": CHECKPOINT_FORMAT,
        "model": unwrap_model(model).state_dict(),
        **{name: obj.state_dict() for name, obj in objs.items()},
        **state,
        "rng": rng_state(),
        "config": config_to_dict(cfg),
        "class_names": cfg.class_names,
    }


def prepare_run_folder(cfg: Config, run_dir: Path) -> None:
    """``checkpoints/`` (without the temp files of a killed run) and ``config.yaml``."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    remove_partial_writes(run_dir / "checkpoints")
    save_config(cfg, run_dir / "config.yaml")


def build_optimization(
    cfg: Config, model: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its per-step schedule (linear warm-up then cosine, or constant)."""
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas)
    )
    total_steps = steps_per_epoch * cfg.train.epochs
    warmup = round(o.warmup_epochs * steps_per_epoch) if o.scheduler == "cosine" else 0
    ratio = o.min_lr_ratio if o.scheduler == "cosine" else 1.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, warmup, ratio)
    )
    return optimizer, scheduler


def restore(
    ckpt: dict[str, Any], source: Path, model: nn.Module, stopper: EarlyStopping, **objs
) -> tuple[list[dict[str, Any]], int, int]:
    """Load a checkpoint into the model, ``objs`` (optimizer, scheduler, scaler), the early
    stopper and the RNGs; returns (history, epoch, step) as saved."""
    load_model_state(model, ckpt["model"], str(source))
    for name, obj in objs.items():
        obj.load_state_dict(ckpt[name])
    stopper.load_state_dict(ckpt["early_stopping"])
    set_rng_state(ckpt["rng"])
    return ckpt["history"], ckpt["epoch"], ckpt["step"]


def save_epoch(
    checkpoint: dict[str, Any],
    history: list[dict[str, Any]],
    cfg: Config,
    run_dir: Path,
    paths: dict[str, Path],
    improved: bool,
) -> None:
    """After an epoch (rank 0): last (and best) checkpoint, epoch copies, metrics.csv, curves."""
    atomic_torch_save(checkpoint, paths["last"])
    keep_epoch_copies(paths["last"], checkpoint["epoch"], cfg.checkpoint.keep_last_n)
    if improved and cfg.checkpoint.save_best:
        atomic_torch_save(checkpoint, paths["best"])
    write_metrics_csv(history, run_dir / "metrics.csv")
    write_curves(history, run_dir, cfg.class_names)


def fit(cfg: Config, run_dir: Path, resume_from: Path | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says, in ``run_dir``; resume from a checkpoint when given one."""
    # ---- build --------------------------------------------------------------------------
    progress = cfg.logging.progress and ddp.is_main()
    loading = resolve_loader_settings(cfg)  # from this process's share of the node's cores
    torch.set_num_threads(loading.threads)
    seed_everything(cfg.train.seed)
    device = ddp.rank_device(resolve_device(cfg.train.device))
    amp_dtype = resolve_amp(cfg.train.amp, device)
    check_model_params(cfg.model.name, cfg.model.params)  # before any data is loaded
    ckpt = load_checkpoint(resume_from) if resume_from else None
    if ckpt is not None:
        check_resume_compatible(ckpt["config"], cfg, resume_from)
    if ddp.is_main():  # under torchrun rank 0 alone writes into the run folder
        prepare_run_folder(cfg, run_dir)
    with ddp.main_first():  # rank 0 makes the phantom and splits.json; the others then read them
        reuse = ckpt is not None or not ddp.is_main()
        parts = prepare_splits(cfg, run_dir, reuse=reuse, progress=progress)
    check_training_split(parts, cfg)  # batch size vs. the training split; findings never positive
    print(describe_splits(parts, cfg.class_names))
    print(loading.describe())
    ddp.warm_disk_cache([parts["train"], parts["val"]], cfg, progress)
    train_ds = build_dataset(ddp.shard_records(parts["train"], cfg, True), cfg, True, progress)
    val_ds = build_dataset(ddp.shard_records(parts["val"], cfg, False), cfg, False, progress)
    seed_of = functools.partial(epoch_seed, cfg.train.seed, ddp.get_rank())
    train_sampler = ddp.shard_sampler(train_ds, cfg, train=True)
    val_loader = build_loader(val_ds, cfg, False, sampler=ddp.shard_sampler(val_ds, cfg, False))
    task = build_task(cfg, label_matrix(parts["train"]))
    check_monitor(cfg, task)
    model = create_model(
        cfg.model.name, cfg.spatial_dims, 1, task.num_outputs, cfg.data.spatial_size,
        **cfg.model.params,
    ).to(device)  # fmt: skip
    model = ddp.distribute_model(model, cfg, device)  # DDP under torchrun, else the model itself
    # one loader iterator for every epoch this process runs: the workers prefetch across
    # epoch boundaries and during validation (src.data.stream); started after a resume point
    stream = EpochStream(train_ds, cfg, seed_of, 0, cfg.train.epochs, train_sampler)
    steps_per_epoch = math.ceil(stream.batches.batches_per_epoch() / cfg.train.accumulate)
    optimizer, scheduler = build_optimization(cfg, model, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    stopper = EarlyStopping(cfg.train.monitor_mode, cfg.train.patience, cfg.train.min_delta)
    history: list[dict[str, Any]] = []
    start_epoch, step, run_id = 0, 0, ""
    if ckpt is not None:
        objs = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        history, start_epoch, step = restore(ckpt, resume_from, model, stopper, **objs)
        if step != start_epoch * steps_per_epoch:  # resumed with another world or batch size
            step = ddp.realign_schedule(scheduler, start_epoch * steps_per_epoch)
        run_id = ckpt["wandb_run_id"]
        if ddp.is_main():  # drop rows newer than the checkpoint
            write_metrics_csv(history, run_dir / "metrics.csv")
        stream.start_at(start_epoch)
        print(f"resumed from {resume_from} at epoch {start_epoch}")
    tracker = Tracker(cfg, run_dir, run_id, enabled=ddp.is_main())
    paths = checkpoint_paths(run_dir, cfg)  # last/best/final, named by the split strategy
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, paths["last"])
    stopped = ckpt is not None and ckpt["early_stopped"]  # --set train.epochs=N extends a run
    ran_epochs = 0

    # ---- epochs -------------------------------------------------------------------------
    for epoch in range(start_epoch, cfg.train.epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        seed_everything(seed_of(epoch))  # dropout and anything else outside the data
        guard.epoch = epoch + 1
        train_loss = train_epoch(
            model,
            stream.epoch(epoch),
            task,
            optimizer,
            scheduler,
            scaler,
            device,
            amp_dtype,
            cfg.train.accumulate,
            cfg.optim.grad_clip,
            progress,
            guard,
        )
        step += steps_per_epoch
        ddp.broadcast_buffers(model)  # every rank evaluates the BatchNorm statistics rank 0 saves
        row = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"]}
        row |= {"train/loss": ddp.mean_over_ranks(train_loss)}
        row |= validate_epoch(model, val_loader, task, device, amp_dtype, progress)
        history.append(row)
        improved = stopper.step(row[cfg.train.monitor], epoch + 1)
        ran_epochs += 1
        state = {
            "epoch": epoch + 1,
            "step": step,
            "early_stopping": stopper.state_dict(),
            "best_value": stopper.best,
            "history": history,
            "wandb_run_id": tracker.run_id,
            "early_stopped": stopper.should_stop,
        }
        checkpoint = make_checkpoint(
            state, cfg, model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
        )
        if ddp.is_main():
            save_epoch(checkpoint, history, cfg, run_dir, paths, improved)
        tracker.log(row, step=epoch + 1)
        print(epoch_line(row, cfg, improved, time.perf_counter() - t0), flush=True)
        for name in collapsed_classes(history, cfg.train.watch_classes):
            warnings.warn(
                f"epoch {epoch + 1}: val recall of watched class {name!r} has been 0 for 2 "
                "epochs in a row: the model no longer predicts it",
                stacklevel=1,
            )
        if stopper.should_stop:
            print(f"early stop: {cfg.train.monitor} did not improve for {stopper.patience} epochs")
            break

    # ---- end ----------------------------------------------------------------------------
    stream.close()
    ddp.barrier()  # rank 0 has written its checkpoints before any rank reads the best one
    final, last = paths["final"], paths["last"]
    if ddp.is_main() and (ran_epochs or not final.is_file()) and last.is_file():
        atomic_torch_save(load_checkpoint(last), final)
    summary = {
        "run_dir": str(run_dir),
        "best_epoch": stopper.best_epoch,
        f"best_{cfg.train.monitor}": stopper.best,
    }
    if cfg.train.eval_test and parts["test"] and paths["best"].is_file():
        summary |= evaluate_best(cfg, model, paths["best"], parts["test"], device, amp_dtype, task)
        if ddp.is_main():
            (run_dir / "test_metrics.json").write_text(json.dumps(summary, indent=1))
    if ddp.is_main():  # report.html / .md (single process, fresh model); a failure only warns
        report_after_training(cfg, run_dir, tracker)
    tracker.summary(summary)
    tracker.finish()
    print_summary(summary, cfg, paths, tracker)
    return summary


def evaluate_best(cfg, model, best_path, records, device, amp_dtype, task) -> dict[str, float]:
    """Test-split metrics of the best checkpoint (picked on validation only)."""
    load_model_state(model, load_checkpoint(best_path)["model"], str(best_path))
    dataset = build_dataset(
        ddp.shard_records(records, cfg, False), cfg, train=False, progress=False
    )
    loader = build_loader(dataset, cfg, False, sampler=ddp.shard_sampler(dataset, cfg, False))
    return validate_epoch(model, loader, task, device, amp_dtype, cfg.logging.progress, "test")


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


def print_summary(
    summary: dict[str, Any], cfg: Config, paths: dict[str, Path], tracker: Tracker
) -> None:
    best = summary[f"best_{cfg.train.monitor}"]
    run_dir = paths["last"].parent.parent
    names = ", ".join(p.name for p in paths.values())
    lines = [
        "",
        f"run folder:   {run_dir}",
        f"best {cfg.train.monitor} = {best:.4f} at epoch {summary['best_epoch']}",
        f"checkpoints:  {run_dir / 'checkpoints'} ({names})",
        f"metrics:      {run_dir / 'metrics.csv'}",
    ]
    if "test/roc_auc_macro" in summary:
        lines.append(
            f"test (best checkpoint): roc_auc_macro {summary['test/roc_auc_macro']:.4f}  "
            f"-> {run_dir / 'test_metrics.json'}"
        )
    lines.append(f"tracking:     {tracker.location}")
    print("\n".join(lines))


def check_resume_compatible(saved: dict[str, Any], cfg: Config, source: Path) -> None:
    """A resume must not change what the weights mean: model, task or classes."""
    now = config_to_dict(cfg)
    for section, key in [
        ("model", "name"),
        ("model", "params"),
        ("data", "task"),
        ("data", "label_columns"),
        ("data", "spatial_size"),
    ]:
        if saved[section][key] != now[section][key]:
            raise CheckpointError(
                f"{section}.{key}: the run at {source.parent.parent} was trained with "
                f"{saved[section][key]!r}, the config now says {now[section][key]!r}; "
                "resume with the run's own settings or start a new run without --resume"
            )


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
    ap.add_argument("--config", required=True, help="YAML config, e.g. configs/ct.yaml")
    ap.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values by dotted key, e.g. --set optim.lr=3e-4 train.epochs=20",
    )
    ap.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN_OR_CHECKPOINT",
        help="continue the latest run of this config, or the given run folder / checkpoint",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        ddp.init_distributed(cfg.train.device)  # under torchrun; a single process otherwise
        run_dir, resume_from = ddp.run_on_main(lambda: resolve_run(args, cfg))  # one run folder
        fit(cfg, run_dir, resume_from)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ddp.close_distributed()
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
