"""Loader and thread settings chosen from the cores this process may use; each one overridable.

``train.num_workers`` (-1), ``train.threads`` (0), ``train.pin_memory``,
``train.persistent_workers`` (``auto``) and ``train.prefetch_factor`` (0) mean "choose for me":

- cores: the CPUs this process may run on (affinity mask), capped by a cgroup CPU quota and
  divided among torchrun's processes on the node;
- workers: on CUDA ``cores - 1`` (at most 8): the main process only launches kernels; on the
  CPU ``cores // 2`` (at most 4): the model's own threads need the other half;
- threads (``torch.set_num_threads``): the cores the workers leave, at least 1;
- pin_memory on CUDA; persistent workers whenever there are workers (no re-fork of a process
  holding the RAM cache every epoch; augmentation stays exact across a resume because it is
  seeded per item, see ``src.data.augmented``); prefetch 2 batches per worker (PyTorch's).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from src.config import Config


def available_cores() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 ``cpu.max`` quota,
    shared among the processes torchrun starts on this node (``LOCAL_WORLD_SIZE``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def uses_cuda(cfg: Config) -> bool:
    """Whether ``train.device`` will put the model on a GPU."""
    device = cfg.train.device
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


@dataclass(frozen=True)
class LoaderSettings:
    """What the DataLoaders and the main process run with (``train.*`` resolved)."""

    num_workers: int
    threads: int
    pin_memory: bool
    persistent_workers: bool
    prefetch_factor: int | None

    def describe(self) -> str:
        """One line for the console."""
        return (
            f"data loading: {self.num_workers} workers, {self.threads} threads, "
            f"pin_memory {self.pin_memory}, prefetch_factor {self.prefetch_factor}; training "
            "reads one loader iterator for the whole run, evaluation loaders persistent_workers "
            f"{self.persistent_workers}"
        )


def resolve_loader_settings(cfg: Config, cores: int | None = None) -> LoaderSettings:
    """``train.*`` loader settings with every automatic value chosen (see the module doc)."""
    t, cuda = cfg.train, uses_cuda(cfg)
    cores = cores or available_cores()
    if t.num_workers >= 0:
        workers = t.num_workers
    elif cuda:
        workers = min(8, cores - 1)
    else:
        workers = min(4, cores // 2)
    threads = t.threads or max(1, cores - workers)
    pin = cuda if t.pin_memory == "auto" else bool(t.pin_memory)
    persistent = workers > 0 if t.persistent_workers == "auto" else bool(t.persistent_workers)
    prefetch = (t.prefetch_factor or 2) if workers > 0 else None
    return LoaderSettings(workers, threads, pin, persistent and workers > 0, prefetch)
