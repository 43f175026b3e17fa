"""The one prediction path: test-time flips average the logits of the image and of every
combination of the flips training used."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from src.training.loop import predict
from src.training.tasks import MultiLabelTask


class Corner(nn.Module):
    """A 'model' whose output depends on orientation: the value at voxel (0, 0, 0)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0, 0, :1].reshape(len(x), 1)


def test_flips_of_all_three_axes_average_every_corner():
    x = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    flips = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    out = predict(Corner(), [{"image": x}], MultiLabelTask(["c"]), flips)
    # the eight flips bring each of the eight voxels to the corner once: the mean voxel
    torch.testing.assert_close(out.logits, x.reshape(2, -1).mean(1, keepdim=True))
    plain = predict(Corner(), [{"image": x}], MultiLabelTask(["c"]))
    torch.testing.assert_close(plain.logits, Corner()(x))


def test_predict_averages_the_logits_of_the_image_and_its_flips():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 2, 2)).eval()
    x = torch.randn(5, 1, 4, 3, 2)
    task = MultiLabelTask(["a", "b"])
    with torch.no_grad():
        expected = (model(x) + model(x.flip(2)) + model(x.flip(4)) + model(x.flip([2, 4]))) / 4
    got = predict(model, [{"image": x}], task, [(0,), (2,), (0, 2)])
    torch.testing.assert_close(got.logits, expected)
    np.testing.assert_allclose(got.probabilities, torch.sigmoid(expected).double(), rtol=1e-6)
    plain = predict(model, [{"image": x}, {"image": x[:2]}], task)
    torch.testing.assert_close(plain.logits, torch.cat([model(x), model(x[:2])]).detach())
    assert plain.labels is None


def test_labels_come_back_in_batch_order_and_nothing_to_predict_is_empty():
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    task = MultiLabelTask(["a", "b"])
    batches = [{"image": torch.zeros(3, 1, 2, 2, 2), "label": torch.eye(2)[[0, 1, 1]]}]
    out = predict(model, batches, task)
    assert out.labels.tolist() == [[1, 0], [0, 1], [0, 1]]
    empty = predict(model, [], task)
    assert empty.logits.shape == (0, 2) and empty.probabilities.shape == (0, 2)
