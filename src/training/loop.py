"""The inner loops: one training epoch (accumulation, AMP, clipping, non-finite guard), and
prediction / validation of a split (gathered from every rank under torchrun)."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from tqdm import tqdm

from src.training import distributed as ddp
from src.training.faults import NonFiniteGuard
from src.training.tasks import Task
from src.training.utils import unwrap_model


def train_epoch(
    model: nn.Module,
    loader,
    task: Task,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    accumulate: int = 1,
    grad_clip: float = 0.0,
    progress: bool = False,
    guard: NonFiniteGuard | None = None,
) -> float:
    """One pass over ``loader``; returns the sample-weighted mean training loss.

    Gradients of ``accumulate`` batches are summed before a step, each loss scaled by the size
    of its group, so k batches of size b step like one batch of k*b; the last, partial group of
    the epoch still steps. A step with a non-finite loss or gradient is skipped (``guard``).
    """
    guard = guard or NonFiniteGuard()
    model.train()
    n_batches = len(loader)
    total, count = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc="train", leave=False, disable=not progress, dynamic_ncols=True)
    for i, batch in enumerate(bar):
        x, y = batch["image"].to(device, non_blocking=True), batch["label"].to(device)
        group_start = (i // accumulate) * accumulate
        group_len = min(accumulate, n_batches - group_start)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = model(x)
        loss = task.loss(logits, y)
        # backward even for a non-finite loss: under torchrun every rank joins the gradient
        # all-reduce, and the reduced gradients then make every rank skip the step alike
        scaler.scale(loss / group_len).backward()
        if guard.loss_ok(loss):
            total += loss.item() * len(x)
            count += len(x)
        if i + 1 == group_start + group_len:
            optimizer_step(model, optimizer, scaler, grad_clip, guard, i + 1)
            if scheduler is not None:  # steps even when the update was skipped: same schedule
                scheduler.step()
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    return total / count if count else float("nan")


def optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
    guard: NonFiniteGuard,
    batch: int,
) -> None:
    """Clip and apply the gathered gradients unless ``guard`` rejects them; then clear them."""
    if guard.step_ok(model, scaler, batch):
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def predict(
    model: nn.Module,
    loader,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "val",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every sample in ``loader``, in loader order, on the CPU."""
    model.eval()
    logits, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            out = model(batch["image"].to(device, non_blocking=True))
        logits.append(out.float().cpu())
        labels.append(batch["label"])
    return torch.cat(logits), torch.cat(labels)


def validate_epoch(
    model: nn.Module,
    loader,
    task: Task,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    prefix: str = "val",
) -> dict[str, float]:
    """Unweighted loss and every metric of ``task`` on ``loader``, keyed ``<prefix>/<name>``.
    Under torchrun: on the whole split, gathered from every rank's shard."""
    logits, labels = predict(unwrap_model(model), loader, device, amp_dtype, progress, prefix)
    logits, labels = ddp.gather_predictions(logits, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # single-class findings: see metrics
        metrics = task.metrics(logits, labels)
    metrics["loss"] = float(task.validation_loss(logits, labels))
    return {f"{prefix}/{k}": v for k, v in metrics.items()}
