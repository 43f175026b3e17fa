"""Numerical faults in the training loop: skip a bad step, stop after too many in a row.

A step whose gradients are not finite (a NaN/inf loss makes them so) is skipped, no optimizer
update, with a warning on stderr naming the loss or the gradient. After
``train.max_nonfinite_steps`` such steps in a row the run stops with ``NonFiniteError``; nothing
is written after the last good epoch, so ``checkpoints/last.pt`` is the last good state. The
decision reads the gradients, which under torchrun are already all-reduced, so every rank skips
or stops at the same step. Under fp16 autocast the GradScaler already skips steps with inf/NaN
gradients (that is how it finds its scale), so the guard leaves those steps to it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn


class NonFiniteError(RuntimeError):
    """Too many non-finite steps in a row; the message says what to try."""


class NonFiniteGuard:
    """Counts non-finite losses and gradients; ``step_ok`` tells the loop whether to step."""

    def __init__(self, max_consecutive: int = 5, last_checkpoint: Path | None = None):
        self.max_consecutive = max_consecutive
        self.last_checkpoint = last_checkpoint
        self.epoch = 0  # set by the loop, for the messages
        self.in_a_row = 0
        self.skipped = 0
        self._bad_loss = False

    def loss_ok(self, loss: torch.Tensor) -> bool:
        """False for a NaN/inf loss (left out of the epoch's mean; named in the warning)."""
        ok = bool(torch.isfinite(loss.detach()).all())
        self._bad_loss |= not ok
        return ok

    def step_ok(self, model: nn.Module, scaler: torch.amp.GradScaler, batch: int) -> bool:
        """Whether the gradients gathered since the last step may be applied."""
        where = f"epoch {self.epoch} batch {batch}" if self.epoch else f"batch {batch}"
        reason = "loss" if self._bad_loss else "gradient"
        self._bad_loss = False
        if scaler.is_enabled():  # fp16: GradScaler skips inf/NaN steps and lowers its scale
            return True
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads or math.isfinite(float(nn.utils.get_total_norm(grads))):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.skipped += 1
        print(
            f"warning: non-finite {reason} at {where}: step skipped "
            f"({self.in_a_row} in a row, stop at {self.max_consecutive})",
            file=sys.stderr,
            flush=True,
        )
        if self.in_a_row >= self.max_consecutive:
            last = self.last_checkpoint
            kept = (
                f"the last good checkpoint is {last}"
                if last is not None and last.is_file()
                else "no epoch finished, so there is no checkpoint"
            )
            raise NonFiniteError(
                f"train.max_nonfinite_steps: {self.in_a_row} training steps in a row had a "
                f"non-finite loss or gradient (last at {where}); stopped, {kept}. Lower "
                "optim.lr, check the inputs, or raise train.max_nonfinite_steps"
            )
        return False
