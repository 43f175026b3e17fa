"""What one training step costs: memory and time of one forward and backward pass of a model at
a planned input size, on the device it will train on.

On CUDA the peak is the allocator's own (``torch.cuda.max_memory_allocated``). On the CPU there
is no allocator peak to read, so the step counts what a training step holds: the tensors autograd
saves for the backward pass (``saved_tensors_hooks``), the input and, per parameter, the weight,
its gradient and AdamW's two moments (16 bytes in float32).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from src.models import create_model

GIB = 1024**3


@dataclass
class StepCost:
    """Measured cost of one training step at ``batch`` images."""

    batch: int
    bytes: int
    seconds: float
    fixed: int = 0  # parameters and optimizer state: independent of the batch

    def bytes_at(self, batch: int) -> int:
        """Memory at another batch size: the activations grow with the batch, the parameters
        and optimizer state do not."""
        return int(self.fixed + (self.bytes - self.fixed) * batch / self.batch)


def host_memory_gb() -> float:
    """This machine's RAM in GiB."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def measure_step(
    model_name: str,
    params: dict,
    size: Sequence[int],
    num_outputs: int,
    batch: int,
    device: str = "cpu",
) -> StepCost:
    """One forward and backward pass of a batch of ``batch`` random images of ``size``."""
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(model_name, len(size), 1, num_outputs, size, **params).to(dev)
        x = torch.rand(batch, 1, *size, device=dev)
    fixed = 16 * sum(p.numel() for p in model.parameters())
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    for _ in range(2):  # the second step is timed: the first pays for kernel selection
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        saved.clear()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(x).float().square().mean()
        loss.backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
    if dev.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated(dev))
    else:
        peak = fixed + sum(saved.values()) + x.numel() * x.element_size()
    return StepCost(batch, peak, seconds, fixed)
