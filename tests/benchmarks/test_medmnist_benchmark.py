"""The MedMNIST benchmark's pieces: published rows read from the reference table, and the
summaries over models and seeds (the ensembles themselves are src.inference.runtime's:
tests/inference/test_ensemble.py)."""

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


def test_summaries_are_over_every_model_and_over_the_seeds_ensembles():
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score

    from benchmarks.medmnist import member_seed, summarise
    from src.config import load_config

    cfg = load_config("configs/adrenalmnist3d.yaml", [])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(40, 1)).astype(float)
    seeds = []
    for seed in range(2):
        single = [(labels * 0.4 + rng.uniform(0, 0.6, labels.shape)).tolist() for _ in range(3)]
        ensemble = np.mean(single, axis=0).tolist()
        seeds.append(
            {"seed": seed, "labels": labels.tolist(), "single": single, "single_tta": single,
             "ensemble": ensemble, "ensemble_tta": ensemble}
        )  # fmt: skip
    res = summarise(cfg, seeds)
    assert res["seeds"] == 2 and res["members"] == 3
    assert len(res["single"]["each"]) == 6 and len(res["seed_ensemble"]["each"]) == 2
    for s, got in zip(seeds, res["seed_ensemble"]["each"], strict=True):
        p = np.asarray(s["ensemble"])
        assert got["roc_auc_macro"] == pytest.approx(roc_auc_score(labels, p), abs=1e-12)
        assert got["accuracy"] == accuracy_score(labels, p >= 0.5)
    aucs = [e["roc_auc_macro"] for e in res["seed_ensemble"]["each"]]
    assert res["seed_ensemble"]["roc_auc_macro"] == [np.mean(aucs), np.std(aucs, ddof=1)]
    assert member_seed(2, 0) == 2 and member_seed(2, 1) == 1002
