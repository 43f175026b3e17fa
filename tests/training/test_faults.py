"""Non-finite loss or gradient: the step is skipped with a warning; K in a row stop the run
with one clear line, keeping the last good checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from src.config import config_from_dict
from src.training import trainer
from src.training.faults import NonFiniteError, NonFiniteGuard
from src.training.loop import train_epoch
from src.training.state import TrainingState
from src.training.tasks import MultiLabelTask
from src.training.trainer import main
from src.training.utils import load_checkpoint


def make_batches(n: int = 4, poison: tuple[int, ...] = ()) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(3, 1, 2, 2, 2, generator=g)
        if i in poison:
            x[0, 0, 0, 0, 0] = float("nan")
        out.append({"image": x, "label": (torch.rand(3, 2, generator=g) < 0.5).float()})
    return out


def run(model, batches, guard=None) -> float:
    cfg = config_from_dict({"data": {"csv": "x", "image_root": ".", "label_columns": ["a", "b"]}})
    cfg.optim.grad_clip = 1.0
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = TrainingState(cfg, model, opt, constant, scaler, torch.device("cpu"))
    return train_epoch(state, batches, MultiLabelTask(["a", "b"]), guard)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 2))


def test_nonfinite_loss_skips_exactly_that_step(capsys):
    model, twin = tiny_model(), tiny_model()
    batches = make_batches(4, poison=(1,))
    loss = run(model, batches, NonFiniteGuard(3))
    clean = [b for i, b in enumerate(batches) if i != 1]
    ref = run(twin, clean)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q)  # the same as never seeing the bad batch
    assert loss == pytest.approx(ref)
    err = capsys.readouterr().err
    assert "warning: non-finite loss at batch 2: step skipped (1 in a row, stop at 3)" in err


def test_nonfinite_gradient_is_skipped_too(capsys):
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    hook = model[1].weight.register_hook(lambda g: g * float("inf"))
    run(model, make_batches(1), NonFiniteGuard(3))
    hook.remove()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # no update from an inf gradient
    assert "non-finite gradient at batch 1" in capsys.readouterr().err


def test_k_bad_steps_in_a_row_stop_with_a_clear_message():
    guard = NonFiniteGuard(2)
    with pytest.raises(NonFiniteError, match=r"train\.max_nonfinite_steps: 2 training steps"):
        run(tiny_model(), make_batches(4, poison=(1, 2)), guard)
    guard = NonFiniteGuard(2)  # bad steps that are not consecutive never stop the run
    run(tiny_model(), make_batches(4, poison=(0, 2)), guard)
    assert guard.skipped == 2


def test_run_stops_keeping_the_last_good_checkpoint(tiny_config, monkeypatch, capsys):
    """From epoch 2 on every loss is NaN: the run stops with one line; last.pt is epoch 1."""
    _, path = tiny_config
    poisoned = {"on": False}
    save = trainer.save_epoch

    def save_then_poison(run, improved):
        save(run, improved)
        poisoned["on"] = True

    loss = MultiLabelTask.loss
    monkeypatch.setattr(trainer, "save_epoch", save_then_poison)
    monkeypatch.setattr(
        MultiLabelTask,
        "loss",
        lambda self, lg, t: loss(self, lg, t) * (float("nan") if poisoned["on"] else 1.0),
    )
    argv = ["--config", str(path), "--set", "train.epochs=3", "train.max_nonfinite_steps=2"]
    assert main([*argv, "logging.run_name=nan"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    last = tiny_config[0].logging.output_dir + "/nan/checkpoints/last.pt"
    assert "train.max_nonfinite_steps: 2 training steps in a row" in errors[0]
    assert f"the last good checkpoint is {last}" in errors[0]
    assert err.count("warning: non-finite loss at epoch 2 batch") == 2
    assert load_checkpoint(last)["epoch"] == 1
