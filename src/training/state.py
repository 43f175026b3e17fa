"""The training state: everything a resume restores, as one object.

``TrainingState`` holds the model, optimizer, scheduler, gradient scaler, early stopping, the
metric history, the epoch and optimizer step, and the W&B run id; ``state_dict()`` is the
checkpoint (plain data, RNG states, resolved config and class names included) and
``load_state_dict()`` restores all of it, so saving and resuming are one call each.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from src.config import Config, config_to_dict
from src.training.utils import (
    CHECKPOINT_FORMAT,
    EarlyStopping,
    load_model_state,
    unwrap_model,
)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of everything random in an epoch: a resumed run repeats it, and under torchrun
    each rank draws its own augmentation."""
    return seed * 100_003 + epoch + 1_000_003 * rank


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as plain data (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingState:
    """Model, optimizer, scheduler, scaler, early stopping, history, epoch, step, run id.

    ``device`` and ``amp_dtype`` say where the steps run; they are not saved (a run resumes on
    another device).
    """

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
    ):
        self.cfg, self.model, self.optimizer = cfg, model, optimizer
        self.scheduler, self.scaler = scheduler, scaler
        self.device, self.amp_dtype = device, amp_dtype
        t = cfg.train
        self.stopper = EarlyStopping(t.monitor_mode, t.patience, t.min_delta)
        self.history: list[dict[str, Any]] = []
        self.epoch, self.step = 0, 0
        self.run_id = ""
        self.early_stopped = False
        # the epoch's optimizer steps (train_epoch) until the tracker sends them; not saved
        self.step_rows: list[dict[str, float]] = []

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def end_epoch(self, row: dict[str, Any]) -> bool:
        """Record an epoch's metrics row; True when the monitored metric improved."""
        self.history.append(row)
        self.epoch = int(row["epoch"])
        improved = self.stopper.step(row[self.cfg.train.monitor], self.epoch)
        self.early_stopped = self.stopper.should_stop
        return improved

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: plain data that loads with ``torch.load(weights_only=True)``."""
        return {
            "format_version": CHECKPOINT_FORMAT,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "early_stopping": self.stopper.state_dict(),
            "best_value": self.stopper.best,
            "history": self.history,
            "wandb_run_id": self.run_id,
            "early_stopped": self.early_stopped,
            "rng": rng_state(),
            "config": config_to_dict(self.cfg),
            "class_names": self.cfg.class_names,
        }

    def load_state_dict(self, ckpt: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore everything ``state_dict`` saved (strict: a model that does not fit fails)."""
        load_model_state(self.model, ckpt["model"], source)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.stopper.load_state_dict(ckpt["early_stopping"])
        set_rng_state(ckpt["rng"])
        self.history = list(ckpt["history"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.run_id = ckpt["wandb_run_id"]
        self.early_stopped = bool(ckpt["early_stopped"])
