"""Splits are patient-grouped, reproducible, and a patient in two splits is an error."""

from __future__ import annotations

import numpy as np
import pytest

from src.config import config_from_dict
from src.data.records import DataError
from src.data.splits import check_splits, make_splits
from src.training.tasks import build_task


def records(n_patients=60, scans=2, seed=0, split=""):
    rng = np.random.default_rng(seed)
    out = []
    for p in range(n_patients):
        lab = (rng.random(3) < [0.1, 0.3, 0.5]).astype(np.float32)
        for s in range(scans):
            out.append(
                {
                    "id": f"p{p}_s{s}",
                    "patient": f"p{p}",
                    "label": lab,
                    "center": f"c{p % 3}",
                    "split": split,
                }
            )
    return out


def split_of(recs, c):
    return make_splits(recs, c, build_task(c))


def cfg(**split):
    return config_from_dict(
        {"data": {"csv": "x", "image_root": ".", "label_columns": ["a", "b", "c"], "split": split}}
    )


@pytest.mark.parametrize("strategy", ["stratified", "kfold", "center_holdout"])
def test_no_patient_crosses_splits(strategy):
    recs = records()
    c = cfg(strategy=strategy, holdout_centers=["c1"])
    splits = split_of(recs, c)
    patient = {r["id"]: r["patient"] for r in recs}
    seen = {}
    for name, ids in splits.items():
        for i in ids:
            assert seen.setdefault(patient[i], name) == name
    assert sum(len(v) for v in splits.values()) == len(recs)
    assert splits["train"] and splits["val"]


def test_center_holdout_puts_exactly_the_named_centres_in_test():
    recs = records()
    splits = split_of(recs, cfg(strategy="center_holdout", holdout_centers=["c2"]))
    center = {r["id"]: r["center"] for r in recs}
    assert {center[i] for i in splits["test"]} == {"c2"}
    assert "c2" not in {center[i] for i in splits["train"] + splits["val"]}


def test_seeded_split_is_reproducible_and_seed_dependent():
    recs = records()
    a, b = split_of(recs, cfg(seed=1)), split_of(recs, cfg(seed=1))
    assert a == b
    assert split_of(recs, cfg(seed=2))["val"] != a["val"]


def test_split_fractions_are_close():
    splits = split_of(records(n_patients=100), cfg(val_fraction=0.2, test_fraction=0.2))
    n = 200
    assert abs(len(splits["test"]) / n - 0.2) < 0.06
    assert abs(len(splits["val"]) / n - 0.2) < 0.06


def test_patient_in_two_splits_is_an_error():
    recs = records(n_patients=4)
    bad = {"train": ["p0_s0", "p1_s0", "p1_s1"], "val": ["p0_s1"], "test": []}
    with pytest.raises(DataError, match="patient 'p0' is in both the train and the val split"):
        check_splits(bad, recs)


def test_split_column_is_used_and_checked():
    recs = records(n_patients=6, scans=1)
    for r, s in zip(recs, ["train", "train", "valid", "test", "train", "val"], strict=True):
        r["split"] = s
    splits = split_of(recs, cfg())
    assert splits["val"] == ["p2_s0", "p5_s0"] and splits["test"] == ["p3_s0"]
    recs[0]["split"] = "holdout"
    with pytest.raises(DataError, match="unknown value 'holdout' in split column"):
        split_of(recs, cfg())


@pytest.mark.parametrize("held", [["c0"], ["c0", "c2"]])
@pytest.mark.parametrize("strategy", ["stratified", "kfold", "center_holdout"])
def test_multiclass_splits_keep_patients_and_hold_out_exactly_the_named_centres(strategy, held):
    rng = np.random.default_rng(1)
    recs = [
        {
            "id": f"p{p}_v{v}",
            "patient": f"p{p}",
            "label": np.float32(k),
            "center": f"c{p % 3}",
            "split": "",
        }
        for p, k in enumerate(rng.choice(3, size=90, p=[0.5, 0.4, 0.1]))
        for v in range(1 + p % 3)
    ]
    c = config_from_dict(
        {
            "data": {
                "csv": "x",
                "image_root": ".",
                "task": "multiclass",
                "label_columns": ["label"],
                "class_names": ["normal", "benign", "malignant"],
                "split": {"strategy": strategy, "holdout_centers": held, "fold": 1},
            }
        }
    )
    splits = split_of(recs, c)
    where = {}
    for name, ids in splits.items():
        for i in ids:
            assert where.setdefault(i.split("_")[0], name) == name  # a patient stays in one split
    assert sorted(i for ids in splits.values() for i in ids) == sorted(r["id"] for r in recs)
    if strategy == "center_holdout":
        center = {r["id"]: r["center"] for r in recs}
        assert {center[i] for i in splits["test"]} == set(held)
        assert not set(held) & {center[i] for i in splits["train"] + splits["val"]}


def test_kfold_keeps_the_split_columns_test_rows_out_of_every_fold():
    recs = records()
    for i, r in enumerate(recs):
        r["split"] = "test" if r["patient"] in ("p1", "p2", "p3") else ("val" if i % 5 else "train")
    test = {r["id"] for r in recs if r["split"] == "test"}
    vals = []
    for fold in range(3):
        splits = split_of(recs, cfg(strategy="kfold", n_folds=3, fold=fold))
        assert set(splits["test"]) == test  # the column's own val rows join the pool
        assert not test & set(splits["train"] + splits["val"])
        vals += splits["val"]
    assert sorted(vals) == sorted(r["id"] for r in recs if r["id"] not in test)  # once each
