"""One ensemble everywhere: its probabilities are the mean of its members' (so are the exported
module's); its members must share task, classes, preprocessing and (a list of runs) one split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from src.config import ConfigError
from src.data.loaders import evaluation_loader
from src.data.records import DataError
from src.data.splits import run_splits
from src.evaluate import evaluate_run
from src.inference.export import export_run, exported_logits
from src.inference.runtime import check_members, load_run
from src.training.loop import predict
from src.training.tasks import BinaryTask, MultiClassTask, MultiLabelTask


@pytest.mark.parametrize(
    "task",
    [MultiLabelTask(["a", "b", "c"]), BinaryTask(["neg", "pos"]), MultiClassTask(["x", "y", "z"])],
)
def test_combined_logits_give_the_mean_of_the_members_probabilities(task):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, task.num_outputs, generator=g) * 8
    logits[0, 0] = 60.0  # saturated members stay exact: the combination works in log space
    mean = np.mean([task.probabilities(m) for m in logits], axis=0)
    np.testing.assert_allclose(task.probabilities(task.combine(logits)), mean, atol=1e-6, rtol=0)


def test_a_group_predicts_and_exports_the_mean_of_its_folds_probabilities(tiny_group, tmp_path):
    run = load_run(tiny_group)
    assert [m.run_dir.name for m in run.members] == ["fold_0", "fold_1", "fold_2"]
    batch = next(
        iter(evaluation_loader(run_splits(run.cfg, tiny_group, run.task)["test"], run.cfg))
    )
    ensemble = predict(run.model, [batch], run.task).probabilities
    members = np.mean([predict(m.model, [batch], m.task).probabilities for m in run.members], 0)
    np.testing.assert_allclose(ensemble, members, atol=1e-6, rtol=0)
    done = export_run(run, ["onnx", "torchscript"], tmp_path)
    for path, _ in done.values():
        exported = run.task.probabilities(exported_logits(path, batch["image"]))
        np.testing.assert_allclose(exported, members, atol=1e-5, rtol=0)


def test_members_of_other_splits_or_classes_are_refused(tiny_group, tmp_path):
    folds = [tiny_group / "fold_0", tiny_group / "fold_1"]
    with pytest.raises(DataError, match=r"splits\.json differs"):
        load_run(folds, home=tmp_path / "ens")
    with pytest.raises(ConfigError, match="--out"):
        load_run(folds)
    a, b = load_run(folds[0]), load_run(folds[1])
    b.task = MultiLabelTask(["other"] * b.task.num_outputs)
    with pytest.raises(ConfigError, match="same task, classes and preprocessing"):
        check_members([a, b])


def test_a_list_of_runs_is_evaluated_in_its_own_folder(tiny_run, tmp_path):
    home = tmp_path / "ens"
    summary = evaluate_run([tiny_run, tiny_run], "test", out_dir=home)
    single = json.loads((tiny_run / "eval-test" / "metrics.json").read_text())
    ens = summary["metrics"]["default"]["roc_auc_macro"]["value"]
    assert ens == pytest.approx(single["metrics"]["default"]["roc_auc_macro"]["value"], abs=1e-6)
    assert json.loads((home / "members.json").read_text())["runs"] == [str(tiny_run)] * 2
    assert (home / "thresholds.json").is_file() and (home / "report.html").is_file()
    assert load_run(home).members  # the folder loads as the ensemble again
