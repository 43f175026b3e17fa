"""The inner loops: one training epoch, and the one prediction path.

``predict`` turns a model and batches into logits, probabilities and labels; validation, the
end-of-run evaluation, ``src.evaluate``, ``src.inference.predict``, export's parity check and the
MedMNIST benchmark all call it. With test-time flips it averages the logits of the image and of
its flips along the axes training flipped (``Task.flips``; none when training did not flip).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from src.training import distributed as ddp
from src.training.faults import NonFiniteGuard
from src.training.state import TrainingState
from src.training.tasks import Flip, Task
from src.training.utils import unwrap_model


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(
        device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    )


def train_epoch(
    state: TrainingState,
    batches: Iterable[dict[str, Any]],
    task: Task,
    guard: NonFiniteGuard | None = None,
    progress: bool = False,
) -> float:
    """One pass over ``batches`` (with ``len``); returns the sample-weighted mean training loss.
    ``state.step_rows`` then holds a row per optimizer step of the epoch: ``step``
    (``state.step`` after it), ``loss`` (mean of its finite batch losses, this process's) and
    the ``lr`` it used.

    Gradients of ``train.accumulate`` batches are summed before a step, each loss scaled by the
    size of its group, so k batches of size b step like one batch of k*b; the last, partial
    group of the epoch still steps. A step with a non-finite loss or gradient is skipped
    (``guard``). The scheduler steps once per optimizer step; ``state.step`` counts them.
    """
    guard = guard or NonFiniteGuard()
    model, optimizer, device = state.model, state.optimizer, state.device
    accumulate = state.cfg.train.accumulate
    model.train()
    n_batches = len(batches)
    total, count = 0.0, 0
    group_total, group_count = 0.0, 0
    state.step_rows = []
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(batches, desc="train", leave=False, disable=not progress, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        x, y = batch["image"].to(device, non_blocking=True), batch["label"].to(device)
        group_start = (i // accumulate) * accumulate
        group_len = min(accumulate, n_batches - group_start)
        with _autocast(device, state.amp_dtype):
            logits = model(x)
        loss = task.loss(logits, y)
        # backward even for a non-finite loss: under torchrun every rank joins the gradient
        # all-reduce, and the reduced gradients then make every rank skip the step alike
        state.scaler.scale(loss / group_len).backward()
        if guard.loss_ok(loss):
            weighted = loss.item() * len(x)
            total, count = total + weighted, count + len(x)
            group_total, group_count = group_total + weighted, group_count + len(x)
        if i + 1 == group_start + group_len:
            lr = state.lr
            optimizer_step(state, guard, i + 1)
            mean = group_total / group_count if group_count else float("nan")
            state.step_rows.append({"step": state.step, "loss": mean, "lr": lr})
            group_total, group_count = 0.0, 0
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    return total / count if count else float("nan")


def optimizer_step(state: TrainingState, guard: NonFiniteGuard, batch: int) -> None:
    """Clip and apply the gathered gradients unless ``guard`` rejects them; clear them; step the
    schedule (even after a skipped update: the same schedule either way)."""
    model, optimizer, scaler = state.model, state.optimizer, state.scaler
    if guard.step_ok(model, scaler, batch):
        if state.cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), state.cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    state.step += 1


@dataclass
class Predictions:
    """Model outputs of a split, in batch order: logits (N, outputs) on the CPU (the mean over
    test-time flips when there were any), the task's probabilities of them (float64) and the
    labels (None for unlabelled inputs)."""

    logits: torch.Tensor
    probabilities: np.ndarray
    labels: torch.Tensor | None


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    task: Task,
    flips: Sequence[Flip] = (),
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> Predictions:
    """Predictions of every batch (``{"image", optional "label"}``) with ``model`` in eval mode.

    ``flips`` (``Task.flips`` for test-time augmentation): the logits are the mean over the
    image and each of its flips (spatial axes, batch and channel excluded).
    """
    model.eval()
    device = device or next(model.parameters()).device
    logits, labels = [], []
    for batch in tqdm(batches, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        x = batch["image"].to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            outs = [model(x)] + [model(x.flip([a + 2 for a in f])) for f in flips]
        logits.append(torch.stack(outs).float().mean(0).cpu() if flips else outs[0].float().cpu())
        if "label" in batch:
            labels.append(batch["label"])
    out = torch.cat(logits) if logits else torch.zeros(0, task.num_outputs)  # no input readable
    return Predictions(out, task.probabilities(out), torch.cat(labels) if labels else None)


def validate_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    task: Task,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    prefix: str = "val",
) -> dict[str, float]:
    """Every metric of ``task`` (decided at 0.5 / arg-max) and the unweighted loss, keyed
    ``<prefix>/<name>``. Under torchrun: on the whole split, gathered from every rank's shard."""
    out = predict(unwrap_model(model), loader, task, (), device, amp_dtype, progress, prefix)
    logits, labels = ddp.gather_predictions(out.logits, out.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # single-class findings: see metrics
        metrics = task.metrics(task.probabilities(logits), labels)
    metrics["loss"] = float(task.validation_loss(logits, labels))
    return {f"{prefix}/{k}": v for k, v in metrics.items()}
