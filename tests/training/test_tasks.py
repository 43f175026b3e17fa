"""Multi-class task: inverse-frequency class weights from the training split in the training
loss only; the validation loss (early stopping, best checkpoint) is unweighted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from src.config import config_from_dict
from src.training.loop import validate_epoch
from src.training.tasks import MultiClassTask, build_task, inverse_frequency_weights

NAMES = ["normal", "benign", "malignant"]


def cfg(class_weights: bool):
    return config_from_dict(
        {
            "data": {
                "csv": "x",
                "image_root": ".",
                "task": "multiclass",
                "label_columns": ["label"],
                "class_names": NAMES,
                "spatial_size": [8, 8],
            },
            "train": {"class_weights": class_weights},
        }
    )


@pytest.mark.parametrize(
    ("counts", "expected"),
    [([2, 4, 4], [1.5, 0.75, 0.75]), ([1879, 1525, 342], None), ([10, 10, 10], [1, 1, 1])],
)
def test_class_weights_from_known_counts(counts, expected):
    labels = np.repeat(np.arange(3), counts).astype(np.float32)
    w = inverse_frequency_weights(labels, 3).numpy()
    balanced = compute_class_weight("balanced", classes=np.arange(3), y=labels.astype(int))
    np.testing.assert_allclose(w, balanced / balanced.mean(), rtol=1e-6)  # ∝ 1/count, mean 1
    if expected is not None:
        np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert w.mean() == pytest.approx(1.0)


def test_build_task_uses_weights_only_when_asked():
    labels = np.repeat(np.arange(3), [6, 3, 1]).astype(np.float32)
    assert build_task(cfg(False), labels).class_weights is None
    weighted = build_task(cfg(True), labels)
    np.testing.assert_allclose(
        weighted.class_weights.numpy(), [1 / 6, 1 / 3, 1] / np.mean([1 / 6, 1 / 3, 1])
    )


class FixedLogits(nn.Module):
    """Returns preset logits, one row per sample, in loader order."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return out


def test_validation_loss_is_unweighted_while_training_loss_is_weighted():
    torch.manual_seed(0)
    logits, y = torch.randn(12, 3), torch.tensor([0] * 6 + [1] * 4 + [2] * 2)
    task = MultiClassTask(NAMES, torch.tensor([0.2, 0.5, 2.3]))
    loader = [{"image": torch.zeros(6, 1, 2, 2), "label": y[i : i + 6]} for i in (0, 6)]
    row = validate_epoch(FixedLogits(logits), loader, task, torch.device("cpu"))
    unweighted = F.cross_entropy(logits, y).item()
    weighted = F.cross_entropy(logits, y, weight=task.class_weights).item()
    assert row["val/loss"] == pytest.approx(unweighted, rel=1e-6)
    assert task.loss(logits, y).item() == pytest.approx(weighted, rel=1e-6)
    assert abs(weighted - unweighted) > 0.05  # the weights do change the training loss
    assert {f"val/recall/{n}" for n in NAMES} <= set(row)
