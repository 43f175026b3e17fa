"""The MedMNIST benchmark's pieces: published rows read from the reference table, and the
per-seed ensembles (test-time flips are the shared prediction path's: tests/training)."""

from __future__ import annotations

import pytest

from benchmarks.medmnist import REFERENCE, published_rows

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
    # the published table ships inside the repository
    assert ("ResNet-18 + 3D", 0.827, 0.721) in published_rows(REFERENCE, "adrenalmnist3d")


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
        assert got["roc_auc_macro"] == pytest.approx(roc_auc_score(labels, mean), abs=1e-12)
        assert got["accuracy"] == accuracy_score(labels, mean > 0)
    aucs = [e["roc_auc_macro"] for e in res["seed_ensemble"]["each"]]
    assert res["seed_ensemble"]["roc_auc_macro"] == [np.mean(aucs), np.std(aucs, ddof=1)]
    assert member_seed(2, 0) == 2 and member_seed(2, 1) == 1002
