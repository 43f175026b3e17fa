"""configs/ct_rate.yaml works unchanged on a copy laid out as CT-RATE is (nested folders)."""

from __future__ import annotations

import csv
import shutil

from src.config import load_config
from src.data.splits import prepare_splits
from src.training.tasks import build_task

NAMES = load_config("configs/ct_rate.yaml").data.label_columns


def make_copy(root, phantom):
    vols = sorted((phantom / "images").glob("*.nii.gz"))
    labels = root / "dataset" / "multi_abnormality_labels"
    labels.mkdir(parents=True)
    k = 0
    for split, n_patients in (("train", 8), ("valid", 3)):
        rows = []
        for p in range(1, n_patients + 1):
            for scan in ("a", "b"):
                name = f"{split}_{p}_{scan}_1.nii.gz"
                folder = root / "dataset" / split / f"{split}_{p}" / f"{split}_{p}_{scan}"
                folder.mkdir(parents=True)
                shutil.copy(vols[k % len(vols)], folder / name)
                k += 1
                rows.append({"VolumeName": name} | {c: (p + len(c)) % 2 for c in NAMES})
        with open(labels / f"{split}_predicted_labels.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def test_ct_rate_layout(tmp_path, tiny_phantom, monkeypatch):
    make_copy(tmp_path / "data" / "CT-RATE", tiny_phantom)
    monkeypatch.chdir(tmp_path)  # the config's default paths are relative: data/CT-RATE/...
    cfg = load_config(
        shutil.copy(f"{__import__('os').path.dirname(__file__)}/../configs/ct_rate.yaml", "c.yaml"),
        ["data.split.val_fraction=0.25"],
    )
    assert len(cfg.data.label_columns) == 18
    parts = prepare_splits(cfg, tmp_path, reuse=False, task=build_task(cfg), progress=False)
    assert len(parts["test"]) == 6 and all(r["id"].startswith("valid_") for r in parts["test"])
    assert len(parts["train"]) + len(parts["val"]) == 16
    patients = {name: {r["patient"] for r in recs} for name, recs in parts.items()}
    assert patients["train"].isdisjoint(patients["val"])
    assert {r["patient"] for r in parts["test"]} == {"valid_1", "valid_2", "valid_3"}
    assert all(r["label"].shape == (18,) for r in parts["train"])
