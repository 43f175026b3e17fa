"""Weights & Biases tracking, offline by default; a W&B failure never stops training.

Offline runs land in ``<run>/wandb/offline-run-*``; ``wandb sync <that folder>`` uploads them
later. A resumed training run continues the same W&B run id.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

from src.config import Config, config_to_dict


class Tracker:
    """A thin, fault-tolerant wrapper over ``wandb``: every call is optional and guarded."""

    def __init__(self, cfg: Config, run_dir: Path, run_id: str = "", enabled: bool = True):
        self.run = None
        self.run_id = run_id
        self.cfg, self.run_dir = cfg, run_dir
        self.pending: list[tuple[int, dict[str, Any]]] = []  # rows W&B has not taken yet
        self.mode = cfg.logging.wandb.mode if enabled else "disabled"
        if self.mode == "disabled":
            return
        try:
            self._init(cfg, run_dir, self.mode)
        except Exception as err:
            self._fall_back(f"W&B {self.mode} init failed ({_first_line(err)})")

    def _fall_back(self, what: str) -> None:
        """After a W&B failure: online goes offline (same run id); offline goes off."""
        if self.mode == "online":
            warnings.warn(f"{what}; logging offline instead", stacklevel=3)
            with contextlib.suppress(Exception):
                self.run.finish(exit_code=1)
            try:
                self._init(self.cfg, self.run_dir, "offline")
                return
            except Exception as err:
                what = f"W&B offline init failed ({_first_line(err)})"
        warnings.warn(f"{what}; W&B off for this run (metrics.csv has every epoch)", stacklevel=3)
        self.run, self.mode = None, "disabled"

    def _init(self, cfg: Config, run_dir: Path, mode: str) -> None:
        import wandb

        w = cfg.logging.wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=w.project,
            entity=w.entity or None,
            name=run_dir.name,
            dir=str(run_dir),
            mode=mode,
            id=self.run_id or None,
            resume="allow" if self.run_id else None,
            config=config_to_dict(cfg),
            tags=w.tags or None,
            group=w.group or None,
            settings=wandb.Settings(init_timeout=w.init_timeout, console="off"),
        )
        self.run_id = self.run.id
        self.mode = mode

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # tracking is never worth a crashed run
            warnings.warn(f"W&B {what} failed ({err}); training goes on", stacklevel=3)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Log a row; a failure falls back (online -> offline) and the row is sent again."""
        if self.run is None:
            return
        clean = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        self.pending.append((step, clean))
        for _ in range(2):  # the first try, and once more after falling back
            try:
                while self.pending:
                    self.run.log(self.pending[0][1], step=self.pending[0][0])
                    self.pending.pop(0)
                return
            except Exception as err:
                self._fall_back(f"W&B log failed ({_first_line(err)})")
                if self.run is None:
                    return

    def summary(self, values: dict[str, Any]) -> None:
        self._guard("summary", lambda: self.run.summary.update(values))

    def finish(self) -> None:
        self._guard("finish", lambda: self.run.finish())

    @property
    def location(self) -> str:
        """Where the run went, for the end-of-run summary."""
        if self.run is None:
            return "W&B off"
        if self.mode == "offline":
            return f"W&B offline run in {Path(self.run.dir).parent}: upload with `wandb sync` on it"
        return f"W&B run {getattr(self.run, 'url', self.run_id)}"


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]
