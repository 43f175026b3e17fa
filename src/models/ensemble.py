"""An ensemble as one module: the members run on the same input and a combine function (the
task's ``Task.combine``) turns their stacked logits into the ensemble's. Prediction, test-time
flips, Grad-CAM and export see it as any other model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """``combine(stack([member(x) for member in members]))``: logits (N, outputs)."""

    def __init__(
        self, members: Sequence[nn.Module], combine: Callable[[torch.Tensor], torch.Tensor]
    ):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(torch.stack([member(x) for member in self.members]))
