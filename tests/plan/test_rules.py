"""The planning rules on fingerprints with known spacings, sizes and prevalences: the plan
equals what the rules in src/plan/rules.py say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.config import config_from_dict
from src.plan import rules
from src.plan.rules import plan_batch, plan_cache, plan_geometry, plan_imbalance, plan_split
from src.training.tasks import build_task, infer_task


def geometry(spacing, p10, fov, dims=3, distinct_spacings=5, shape=None, distinct_shapes=5):
    return {
        "dims": dims,
        "spacing": {"median": spacing, "p10": p10},
        "field_of_view_mm": {"median": fov},
        "shape": {"median": shape or [s / t for s, t in zip(fov, spacing, strict=True)]},
        "distinct_spacings": distinct_spacings,
        "distinct_shapes": distinct_shapes,
    }


def test_anisotropic_spacing_keeps_the_coarse_axis_coarse():
    fp = geometry([0.8, 0.8, 5.0], [0.7, 0.7, 3.0], [40.0, 40.0, 60.0])
    plan = plan_geometry(fp, "cuda")
    spacing = plan["data.spacing"][0]
    assert spacing == [0.8, 0.8, 3.0]  # median in plane, the 10th percentile out of plane
    assert plan["data.spatial_size"][0] == [52, 52, 20]  # ceil(fov / spacing), multiple of 4
    assert "anisotropic" in plan["data.spacing"][1]


def test_isotropic_spacing_is_the_median():
    fp = geometry([1.0, 1.2, 1.5], [0.9, 1.0, 1.0], [30.0, 30.0, 30.0])
    assert plan_geometry(fp, "cuda")["data.spacing"][0] == [1.0, 1.2, 1.5]


def test_a_field_of_view_over_the_budget_coarsens_the_spacing_not_the_view():
    fp = geometry([0.7, 0.7, 1.0], [0.7, 0.7, 1.0], [350.0, 350.0, 300.0])
    plan = plan_geometry(fp, "cpu")
    size, spacing = plan["data.spatial_size"][0], plan["data.spacing"][0]
    assert math.prod(s - 4 for s in size) <= rules.MAX_VOXELS[("cpu", 3)]
    covered = [n * s for n, s in zip(size, spacing, strict=True)]
    assert all(c >= f for c, f in zip(covered, [350, 350, 300], strict=True))


def test_one_spacing_and_2d_sizes():
    same = geometry([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [28.0, 28.0, 28.0], distinct_spacings=1)
    assert plan_geometry(same, "cpu")["data.spacing"][0] == []
    fp = geometry([1.0, 1.0], [1.0, 1.0], [28.0, 28.0], dims=2, shape=[28, 28], distinct_shapes=1)
    plan = plan_geometry(fp, "cpu")
    assert plan["data.spatial_size"][0] == [28, 28] and plan["data.resize_mode"][0] == "pad_crop"
    big = geometry([1.0, 1.0], [1.0, 1.0], [1.0, 1.0], dims=2, shape=[1024, 512])
    plan = plan_geometry(big, "cpu")
    w, h = plan["data.spatial_size"][0]
    assert plan["data.resize_mode"][0] == "fit" and abs(w / h - 2) < 0.1
    assert (w - 4) * (h - 4) <= rules.MAX_VOXELS[("cpu", 2)]


def _task(kind_columns: dict[str, list[str]]):
    kind, classes = infer_task(kind_columns)
    cfg = config_from_dict(
        {
            "data": {
                "csv": "x.csv",
                "image_root": ".",
                "task": kind,
                "label_columns": list(kind_columns),
                "class_names": classes,
            }
        }
    )
    return build_task(cfg)


@pytest.mark.parametrize(
    ("prevalence", "weighted", "watched"),
    [(0.03, True, ["rare"]), (0.15, True, []), (0.40, False, [])],
)
def test_pos_weight_for_a_rare_multilabel_finding(prevalence, weighted, watched):
    n = 200
    rng = np.random.default_rng(0)
    rare = (np.arange(n) < round(prevalence * n)).astype(float)
    labels = np.c_[rng.permutation(rare), np.arange(n) % 2]
    task = _task({"rare": ["0", "1"], "common": ["0", "1"]})
    plan = plan_imbalance({}, task, labels)
    assert plan["train.pos_weight"][0] is weighted
    assert plan["train.watch_classes"][0] == watched


def test_multiclass_gets_class_weights_from_the_task():
    task = _task({"label": ["a", "b", "c"]})
    labels = np.array([0] * 90 + [1] * 95 + [2] * 15)
    plan = plan_imbalance({}, task, labels)
    assert plan["train.class_weights"][0] is True and "train.pos_weight" not in plan
    assert plan["train.watch_classes"][0] == ["c"]


def test_infer_task():
    assert infer_task({"a": ["0", "1"], "b": ["1"]}) == ("multilabel", [])
    assert infer_task({"label": ["0", "1", "1"]}) == ("binary", [])
    assert infer_task({"label": ["2", "0", "1"]}) == ("multiclass", ["0", "1", "2"])
    assert infer_task({"label": ["cat", "dog"]}) == ("multiclass", ["cat", "dog"])


def groups(split=None, centres=None):
    return {"groups": {"split_column": split or {}, "centres": centres or {}, "patients": 10}}


def test_a_split_column_is_kept():
    plan = plan_split(groups(split={"train": 80, "val": 10, "test": 10}))
    assert plan["data.split.strategy"][0] == "column"


def test_several_centres_offer_center_holdout_and_one_is_stratified():
    plan = plan_split(groups(centres={"A": 50, "B": 20, "C": 30}))
    assert plan["data.split.strategy"][0] == "stratified"
    assert plan["data.split.holdout_centers"][0] == ["B"]
    assert "data.split.holdout_centers" not in plan_split(groups(centres={"A": 5}))


def test_cache_in_ram_when_it_fits_else_on_disk():
    fp = {"images": 1000}
    assert plan_cache(fp, [64, 64, 64], memory_gb=8)["data.cache"][0] == "ram"  # 1 GiB
    small = plan_cache(fp, [64, 64, 64], memory_gb=1.5)  # 1 GiB float32 > 0.75: float16
    assert small["data.cache"][0] == "ram" and small["data.cache_dtype"][0] == "float16"
    assert plan_cache(fp, [64, 64, 64], memory_gb=0.5)["data.cache"][0] == "disk"


@pytest.mark.parametrize(("n_train", "batch"), [(500, 128), (500, 8), (5000, 64), (50, 8)])
def test_epochs_come_from_a_target_number_of_steps(n_train, batch):
    plan = rules.plan_schedule(n_train, batch, 1)
    epochs, steps = plan["train.epochs"][0], math.ceil(n_train / batch)
    assert 10 <= epochs <= 100
    assert epochs * steps >= rules.TARGET_STEPS or epochs == 100
    assert epochs * steps < rules.TARGET_STEPS + steps or epochs == 10
    assert plan["train.patience"][0] == max(5, math.ceil(epochs / 3))


def _model_plan(size):
    return {
        "data.spatial_size": (size, ""),
        "model.name": (f"resnet{len(size)}d", ""),
        "model.params": ({"depth": 10, "widths": [4, 8, 8, 8]}, ""),
    }


def test_lr_and_effective_batch_follow_the_training_set():
    small, _ = plan_batch(_model_plan([32, 32]), 1, 300, memory_gb=4, device="cpu")
    large, _ = plan_batch(_model_plan([32, 32]), 1, 3000, memory_gb=4, device="cpu")
    assert small["train.batch_size"][0] == 8 and large["train.batch_size"][0] == 64
    assert small["optim.lr"][0] < large["optim.lr"][0]
    assert large["optim.lr"][0] == pytest.approx(2e-3 * math.sqrt(64 / 32), rel=0.05)


def test_a_tight_memory_budget_halves_the_batch_and_accumulates():
    plan, cost = plan_batch(_model_plan([32, 32]), 1, 3000, memory_gb=4, device="cpu")
    per_image = (cost.bytes - cost.fixed) / cost.batch
    memory_gb = 2 * (cost.fixed + 10 * per_image) / 1024**3  # room for about 10 images
    tight, _ = plan_batch(_model_plan([32, 32]), 1, 3000, memory_gb=memory_gb, device="cpu")
    assert tight["train.batch_size"][0] == 8
    assert tight["train.batch_size"][0] * tight["train.accumulate"][0] == 64
    assert tight["optim.lr"][0] == plan["optim.lr"][0]  # the same effective batch
