"""W&B faults never stop training: an unreachable server or an error mid-run falls back to
offline with a warning, and no logged row is dropped."""

from __future__ import annotations

import csv

import pytest
import wandb

from src.training.tracking import Tracker
from src.training.trainer import fit


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest disables W&B for other tests
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_online_without_server_trains_and_logs_offline(wandb_env, tiny_config, tmp_path):
    cfg, _ = tiny_config
    cfg.logging.wandb.mode = "online"
    cfg.logging.wandb.init_timeout = 3.0
    cfg.train.epochs = 1
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="W&B online init failed .*; logging offline instead"):
        summary = fit(cfg, run)
    assert summary["best_epoch"] >= 1
    with open(run / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == cfg.train.epochs
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))


def test_error_mid_run_falls_back_offline_and_resends_the_row(
    wandb_env, monkeypatch, tiny_config, tmp_path
):
    cfg, _ = tiny_config
    cfg.logging.wandb.mode = "online"
    real_init = wandb.init
    sent: list[tuple[str, int]] = []

    def init(**kwargs):  # an "online" run that works until its second log call
        mode = kwargs.pop("mode")
        run = real_init(mode="offline", **kwargs)
        log = run.log

        def spy(row, step):
            if mode == "online" and step == 2:
                raise wandb.errors.CommError("connection reset by peer")
            sent.append((mode, step))
            log(row, step=step)

        run.log = spy
        return run

    monkeypatch.setattr(wandb, "init", init)
    tracker = Tracker(cfg, tmp_path / "run")
    first_id = tracker.run_id
    tracker.log({"val/loss": 0.9}, step=1)
    with pytest.warns(UserWarning, match="W&B log failed .*connection reset.*; logging offline"):
        tracker.log({"val/loss": 0.8}, step=2)
    tracker.log({"val/loss": 0.7}, step=3)
    tracker.finish()
    assert sent == [("online", 1), ("offline", 2), ("offline", 3)]  # nothing dropped
    assert tracker.mode == "offline" and tracker.run_id == first_id and not tracker.pending
