"""configs/sweep_ct.yaml: the file `wandb sweep` loads, and a command line that `wandb agent`
builds from it (W&B's own macro expansion) which the trainer accepts. W&B's schema checker
(the optional `sweeps` package) is not installed; the keys are checked against W&B's
documented sweep keys instead."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from wandb.sdk.launch.sweeps.utils import (
    create_sweep_command,
    create_sweep_command_args,
    load_sweep_config,
)

from src.config import load_config
from src.training.tasks import build_task
from src.training.trainer import check_before_data, parse_args

ROOT = Path(__file__).resolve().parents[1]
SWEEP = load_sweep_config(str(ROOT / "configs" / "sweep_ct.yaml"))
TOP_LEVEL = {"program", "method", "metric", "parameters", "command", "early_terminate"}
TOP_LEVEL |= {"name", "description", "project", "entity", "run_cap"}
TUNED = ("optim.lr", "optim.weight_decay", "train.batch_size", "model.params.depth")


def test_the_sweep_file_states_method_metric_and_parameters():
    assert set(SWEEP) <= TOP_LEVEL
    assert SWEEP["method"] in ("grid", "random", "bayes")
    assert SWEEP["metric"] == {"name": "best_val/roc_auc_macro", "goal": "maximize"}
    assert tuple(SWEEP["parameters"]) == TUNED
    for spec in SWEEP["parameters"].values():
        assert spec.get("values") or {"distribution", "min", "max"} <= set(spec)


def agent_command(values: dict[str, object]) -> list[str]:
    """The command `wandb agent` runs for a sweep run with these values."""
    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    macros |= {"env": ["/usr/bin/env"], "interpreter": ["python"]}
    argv: list[str] = []
    for chunk in create_sweep_command(list(SWEEP["command"])):
        argv += macros[chunk[2:-1]] if chunk.startswith("${") else [chunk]
    return argv


def parameter_values(name: str) -> list:
    spec = SWEEP["parameters"][name]
    return spec.get("values") or [spec["min"], spec["max"]]


@pytest.mark.parametrize(
    ("lr", "weight_decay", "batch_size", "depth"),
    list(itertools.zip_longest(*(parameter_values(name) for name in TUNED), fillvalue=None)),
)
def test_the_agents_command_line_is_accepted_by_the_trainer(
    monkeypatch, lr, weight_decay, batch_size, depth
):
    values = {
        name: v if v is not None else parameter_values(name)[0]
        for name, v in zip(TUNED, (lr, weight_decay, batch_size, depth), strict=True)
    }
    argv = agent_command(values)
    assert argv[:4] == ["/usr/bin/env", "python", "-m", "src.training.trainer"]
    monkeypatch.chdir(ROOT)  # the agent runs from the repository root
    args = parse_args(argv[4:])
    cfg = load_config(args.config, args.set)
    assert cfg.optim.lr == pytest.approx(values["optim.lr"])
    assert cfg.optim.weight_decay == pytest.approx(values["optim.weight_decay"])
    assert cfg.train.batch_size == values["train.batch_size"]
    assert cfg.model.params["depth"] == values["model.params.depth"]
    check_before_data(cfg, build_task(cfg))  # model, depth against the input, monitor
