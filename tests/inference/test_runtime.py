"""Test-time augmentation and checkpoint names of the shared run loader."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.config import config_from_dict
from src.inference.runtime import predict_batch, resolve_checkpoint
from src.training.utils import CheckpointError


def test_tta_is_the_mean_over_the_image_and_its_flips(tmp_path):
    cfg = config_from_dict(
        {
            "data": {
                "csv": "x.csv",
                "image_root": str(tmp_path),
                "label_columns": ["a", "b"],
                "augment": {"flip_axes": [0, 2]},
            },
        }
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 2, 2)).eval()
    x = torch.randn(5, 1, 4, 3, 2)
    expected = (
        torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(2))) + torch.sigmoid(model(x.flip(4)))
    ) / 3
    torch.testing.assert_close(predict_batch(model, x, cfg, tta=True), expected)
    torch.testing.assert_close(predict_batch(model, x, cfg), torch.sigmoid(model(x)))


def test_checkpoint_names_resolve_inside_the_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    assert resolve_checkpoint(tmp_path, "last") == tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match=r"--checkpoint: .*best.pt not found"):
        resolve_checkpoint(tmp_path, "best")
