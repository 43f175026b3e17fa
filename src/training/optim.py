"""The optimizer and its learning-rate schedule (per optimizer step)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from src.config import Config
from src.training.utils import unwrap_model


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine down to ``min_ratio`` at the end."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def parameter_groups(
    model: nn.Module, lr: float, head: set[str], backbone_scale: float
) -> list[dict[str, Any]]:
    """Trainable parameters as AdamW groups: the classifier head (``head``: state-dict keys) at
    ``lr`` first, the one the logs show; then every other layer at ``backbone_scale * lr``.
    Frozen parameters (``model.freeze``) are left out."""
    named = [(n, p) for n, p in unwrap_model(model).named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in head], "lr": lr},
        {"params": [p for n, p in named if n not in head], "lr": lr * backbone_scale},
    ]
    return [g for g in groups if g["params"]]


def build_optimization(
    cfg: Config, model: nn.Module, steps_per_epoch: int, head: set[str] | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its per-step schedule (linear warm-up then cosine, or constant). With the
    model's ``head`` keys, the head and the backbone are two groups (``parameter_groups``)."""
    o = cfg.optim
    groups = parameter_groups(model, o.lr, head, o.backbone_lr_scale) if head else None
    optimizer = torch.optim.AdamW(
        groups or model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas)
    )
    total_steps = steps_per_epoch * cfg.train.epochs
    warmup = round(o.warmup_epochs * steps_per_epoch) if o.scheduler == "cosine" else 0
    ratio = o.min_lr_ratio if o.scheduler == "cosine" else 1.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, warmup, ratio)
    )
    return optimizer, scheduler
