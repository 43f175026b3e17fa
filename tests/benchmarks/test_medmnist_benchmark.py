"""The MedMNIST benchmark's pieces: published rows read from the reference table, flip TTA."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.medmnist import FlipAverage, published_rows

TABLE = """# MedMNIST v2
## 3D
| method | OrganMNIST3D | AdrenalMNIST3D |
|---|---|---|
| ResNet-18 + 3D   | .996 / .907 | .827 / .721 |
| auto-sklearn     | .977 / .814 | .828 / .802 |

## 2D (selected)
| method | ChestMNIST (multi-label) | PneumoniaMNIST |
|---|---|---|
| ResNet-18 (28)  | .768 / .947 | .944 / .854 |
"""


def test_published_rows_pick_the_datasets_column(tmp_path):
    ref = tmp_path / "ref.md"
    ref.write_text(TABLE)
    assert published_rows(ref, "adrenalmnist3d") == [
        ("ResNet-18 + 3D", 0.827, 0.721),
        ("auto-sklearn", 0.828, 0.802),
    ]
    assert published_rows(ref, "chestmnist") == [("ResNet-18 (28)", 0.768, 0.947)]
    assert published_rows(ref, "nosuchmnist") == []
    assert published_rows(tmp_path / "missing.md", "adrenalmnist3d") == []


class Corner(nn.Module):
    """A 'model' whose output depends on orientation: the value at voxel (0, 0, 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0, 0, :1].reshape(len(x), 1)


def test_flip_average_is_the_mean_over_all_flip_combinations():
    x = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    out = FlipAverage(Corner(), [0, 1, 2])(x)
    # the eight flips bring each of the eight voxels to the corner once: the mean voxel
    torch.testing.assert_close(out, x.reshape(2, -1).mean(1, keepdim=True))
    torch.testing.assert_close(FlipAverage(Corner(), [])(x), Corner()(x))


def test_seed_ensembles_average_each_seeds_members():
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score

    from benchmarks.medmnist import member_seed, summarise
    from src.config import load_config

    cfg = load_config("configs/adrenalmnist3d.yaml", [])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(40, 1)).astype(float)
    runs = []
    for seed in range(2):
        for member in range(3):
            logits = (labels * 1.5 + rng.normal(0, 1.5, labels.shape)).tolist()
            runs.append(
                {"seed": seed, "member": member, "labels": labels.tolist(), "logits": logits,
                 "tta_logits": logits}
            )  # fmt: skip
    res = summarise(cfg, runs)
    assert res["seeds"] == 2 and res["members"] == 3
    assert len(res["single"]["each"]) == 6 and len(res["seed_ensemble"]["each"]) == 2
    for seed in range(2):
        mean = np.mean([r["logits"] for r in runs if r["seed"] == seed], axis=0)
        got = res["seed_ensemble"]["each"][seed]
        assert got["roc_auc_macro"] == np.float64(roc_auc_score(labels, mean))
        assert got["accuracy"] == accuracy_score(labels, mean > 0)
    aucs = [e["roc_auc_macro"] for e in res["seed_ensemble"]["each"]]
    assert res["seed_ensemble"]["roc_auc_macro"] == [np.mean(aucs), np.std(aucs)]
    assert member_seed(2, 0) == 2 and member_seed(2, 1) == 1002


def test_tta_flips_only_what_training_flipped():
    from benchmarks.medmnist import tta_axes
    from src.config import load_config

    assert tta_axes(load_config("configs/adrenalmnist3d.yaml", [])) == [0, 1, 2]
    assert tta_axes(load_config("configs/pneumoniamnist.yaml", [])) == []
