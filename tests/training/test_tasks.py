"""The task object owns everything task-dependent: label parsing, counts, strata, one-hot,
decisions, metric names, test-time flips, losses (class weights in the training loss only; the
validation loss is unweighted); and nothing outside it branches on the task kind."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from src.config import config_from_dict
from src.data.records import LabelError
from src.training.loop import validate_epoch
from src.training.tasks import (
    BinaryTask,
    MultiClassTask,
    MultiLabelTask,
    build_task,
    inverse_frequency_weights,
    known_cell_bce,
    tta_flips,
)

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
    assert build_task(cfg(False), labels).loss_weights is None
    assert build_task(cfg(True)).loss_weights is None  # no labels: no weights
    weighted = build_task(cfg(True), labels)
    np.testing.assert_allclose(
        weighted.loss_weights.numpy(), [1 / 6, 1 / 3, 1] / np.mean([1 / 6, 1 / 3, 1])
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
    weighted = F.cross_entropy(logits, y, weight=task.loss_weights).item()
    assert row["val/loss"] == pytest.approx(unweighted, rel=1e-6)
    assert task.loss(logits, y).item() == pytest.approx(weighted, rel=1e-6)
    assert abs(weighted - unweighted) > 0.05  # the weights do change the training loss
    assert {f"val/recall/{n}" for n in NAMES} <= set(row)


def test_label_parsing_counts_and_strata():
    ml, binary, mc = (
        MultiLabelTask(["a", "b"]),
        BinaryTask(["normal", "sick"]),
        MultiClassTask(NAMES),
    )
    assert ml.parse_label({"a": "1", "b": "0.0"}, ["a", "b"]).tolist() == [1.0, 0.0]
    with pytest.raises(LabelError, match="label must be 0 or 1, got a blank cell"):
        ml.parse_label({"a": "1", "b": " "}, ["a", "b"])
    assert mc.parse_label({"label": "benign"}, ["label"]) == 1
    assert mc.parse_label({"label": "2"}, ["label"]) == 2
    with pytest.raises(LabelError, match="unknown class 'cyst'; expected one of normal, benign"):
        mc.parse_label({"label": "cyst"}, ["label"])
    labels = np.array([[1, 0], [1, 1], [0, 0]], np.float32)
    assert ml.label_counts(labels) == {"a": 2, "b": 1}
    assert ml.strata(labels).tolist() == [0, 1, -1]  # the rarer finding wins
    assert binary.label_counts(np.array([[1], [0], [0]])) == {"normal": 2, "sick": 1}
    assert mc.label_counts(np.array([0, 2, 2])) == {"normal": 1, "benign": 0, "malignant": 2}
    assert binary.output_names == ["sick"] and binary.num_outputs == 1


def test_decisions_and_one_hot():
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]])
    mc = MultiClassTask(NAMES)
    assert mc.decisions(probs, {"normal": 0.99}).tolist() == [[0, 1, 0], [1, 0, 0]]  # arg-max
    assert mc.one_hot(np.array([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert mc.threshold_names == []
    ml = MultiLabelTask(NAMES)
    assert ml.decisions(probs, {"benign": 0.8}).tolist() == [[0, 0, 0], [1, 0, 0]]
    assert ml.threshold_names == NAMES


def flip_cfg(prob, axes):
    raw = {"data": {"csv": "x", "image_root": ".", "label_columns": ["a"]}}
    raw["data"]["augment"] = {"flip_prob": prob, "flip_axes": axes}
    return config_from_dict(raw)


def test_tta_flips_are_those_training_used():
    assert tta_flips(flip_cfg(0.0, [0])) == []  # chest CT: never flipped, never averaged
    assert tta_flips(flip_cfg(0.5, [0])) == [(0,)]
    assert tta_flips(flip_cfg(0.5, [2, 0])) == [(0,), (2,), (0, 2)]
    assert build_task(flip_cfg(0.0, [0])).flips == []


def test_metric_names_are_what_the_task_logs():
    task = MultiLabelTask(["a", "b"])
    probs, y = np.array([[0.2, 0.9], [0.8, 0.1]]), np.array([[0, 1], [1, 0]])
    assert list(task.metrics(probs, y)) == task.metric_names
    assert "val/roc_auc_macro" in {f"val/{m}" for m in task.metric_names}


def test_nothing_outside_the_task_module_branches_on_the_task_kind():
    """`cfg.data.task == ...`, `task.kind in ...` and the kinds' names as strings live in
    src/training/tasks.py and the config package only."""
    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(
        r"(data\.task|\btask\.kind)\s*(==|!=|\bin\b)|[\"'](multilabel|multiclass|binary)[\"']"
    )
    found = []
    for path in [*(root / "src").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]:
        rel = path.relative_to(root).as_posix()
        if rel == "src/training/tasks.py" or rel.startswith("src/config"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                found.append(f"{rel}:{i}: {line.strip()}")
    assert found == []


@pytest.mark.parametrize(
    ("missing", "uncertain", "row", "expected"),
    [
        ("ignore", "ignore", {"a": "", "b": "-1"}, [np.nan, np.nan]),
        ("ignore", "positive", {"a": " ", "b": "-1"}, [np.nan, 1.0]),
        ("error", "negative", {"a": "1", "b": "-1.0"}, [1.0, 0.0]),
    ],
)
def test_unknown_label_cells_follow_the_policies(missing, uncertain, row, expected):
    task = MultiLabelTask(["a", "b"], missing=missing, uncertain=uncertain)
    np.testing.assert_array_equal(task.parse_label(row, ["a", "b"]), expected)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"a": "", "b": "0"}, "blank cell; .*data.missing_labels: ignore"),
        ({"a": "0", "b": "-1"}, "got '-1' \\(uncertain\\); set data.uncertain_labels"),
    ],
)
def test_unknown_label_cells_are_errors_by_default(row, message):
    with pytest.raises(LabelError, match=message):
        MultiLabelTask(["a", "b"]).parse_label(row, ["a", "b"])


def test_masked_loss_equals_sklearn_log_loss_on_known_cells():
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 3)) < 0.4).astype(np.float32)
    labels[rng.random((40, 3)) < 0.3] = np.nan
    logits = torch.tensor(rng.normal(size=(40, 3)), dtype=torch.float32, requires_grad=True)
    task = MultiLabelTask(["a", "b", "c"], missing="ignore")
    loss = task.loss(logits, torch.from_numpy(labels))
    known = ~np.isnan(labels)
    probs = 1 / (1 + np.exp(-logits.detach().numpy()))
    assert loss.item() == pytest.approx(log_loss(labels[known], probs[known]), rel=1e-5)
    validation = task.validation_loss(logits.detach(), torch.from_numpy(labels))
    assert validation.item() == pytest.approx(loss.item())
    loss.backward()
    assert torch.all(logits.grad[torch.from_numpy(~known)] == 0)  # unknown cells teach nothing


def test_counts_and_strata_use_known_labels_only():
    task = MultiLabelTask(["common", "rare"], missing="ignore")
    labels = np.array([[1, np.nan], [np.nan, 1], [0, 0], [1, 0], [np.nan, np.nan]])
    assert task.label_counts(labels) == {"common": 2, "rare": 1}
    assert task.ignored_counts(labels) == {"common": 2, "rare": 2}
    np.testing.assert_array_equal(task.strata(labels), [0, 1, -1, 0, -1])
    binary = BinaryTask(["neg", "pos"], missing="ignore")
    column = np.array([[1.0], [np.nan], [0.0], [0.0]])
    assert binary.label_counts(column) == {"neg": 2, "pos": 1}
    np.testing.assert_array_equal(binary.strata(column), [1, -1, 0, 0])


def test_bce_with_every_label_known_has_the_unmasked_gradients_to_the_bit():
    """Runs without unknown labels train exactly as before masking existed (a 1-ulp gradient
    difference changes a whole training run)."""
    torch.manual_seed(0)
    logits = torch.randn(8, 6, requires_grad=True)
    target = (torch.rand(8, 6) > 0.7).float()
    pos_weight = torch.rand(6) * 5
    want = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
    got = known_cell_bce(logits, target, pos_weight)
    (g_want,) = torch.autograd.grad(want, logits)
    (g_got,) = torch.autograd.grad(got, logits)
    assert torch.equal(got, want) and torch.equal(g_got, g_want)
