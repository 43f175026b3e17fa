"""W&B: faults never stop training (an unreachable server or an error mid-run falls back to
offline with a warning, and no logged row is dropped); ``mode: auto`` follows the credentials;
and what a run logged (axes, model artifact, run files, predictions table, charts), read back
from its offline ``.wandb`` files."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import wandb
import yaml

from src.config import config_from_dict
from src.inference.export import main as export_main
from src.training.tasks import MultiClassTask
from src.training.tracking import EvaluationLog, Tracker, resolve_mode
from src.training.trainer import fit, train_model
from tests.conftest import tiny_raw_config
from tests.wandb_records import LoggedRun, logged_runs


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


# What a run really logged, read back from its offline `.wandb` files (tests/wandb_records.py).


def offline_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """W&B as on a machine without credentials, its files under ``home``."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        mp.delenv(name, raising=False)
    mp.setenv("NETRC", str(home / "no-netrc"))
    for name, folder in [
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
    ]:
        mp.setenv(name, str(home / "wandb-home" / folder))
    mp.setenv("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def tracked_run(tiny_phantom, tmp_path_factory):
    """A tiny run trained and evaluated (test split, Grad-CAM gallery) under ``mode: auto``
    without credentials; yields (run folder, its stdout) with the same W&B environment."""
    out = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        offline_env(mp, out)
        raw = tiny_raw_config(tiny_phantom, out)
        raw["data"]["split"] |= {"test_fraction": 0.25}
        raw["evaluation"] |= {"gradcam_per_group": 1}
        raw["logging"]["wandb"] = {"mode": "auto", "init_timeout": 30}
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            train_model(config_from_dict(raw), out / "run")
        yield out / "run", stdout.getvalue()


def step_rows(run: LoggedRun) -> list[dict]:
    return [h for h in run.history if "trainer/global_step" in h]


def test_auto_without_credentials_goes_offline_and_says_how_to_sync(tracked_run):
    run_dir, stdout = tracked_run
    lines = [line for line in stdout.splitlines() if line.startswith("W&B offline")]
    assert len(lines) == 1  # once for the run, not again for its evaluation
    assert "no W&B credentials" in lines[0]
    assert f"wandb sync {run_dir / 'wandb'}/offline-run-*" in lines[0]


def test_training_logs_steps_and_epochs_on_their_own_axes(tracked_run):
    run_dir, _ = tracked_run
    training = logged_runs(run_dir)[0]
    assert training.metrics["train/loss"] == training.metrics["lr"] == "trainer/global_step"
    assert training.metrics["val/*"] == training.metrics["train/epoch_loss"] == "epoch"
    steps = step_rows(training)
    assert [h["trainer/global_step"] for h in steps] == list(range(1, len(steps) + 1))
    assert all(h["_step"] == h["trainer/global_step"] and "lr" in h for h in steps)
    epochs = [h for h in training.history if "epoch" in h]
    assert [h["epoch"] for h in epochs] == [1, 2]
    with open(run_dir / "metrics.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    for row, logged in zip(csv_rows, epochs, strict=True):
        assert logged["_step"] == int(row["step"])  # the epoch's last optimizer step
        assert logged["val/loss"] == pytest.approx(float(row["val/loss"]), rel=1e-5)
        assert logged["train/epoch_loss"] == pytest.approx(float(row["train/loss"]), rel=1e-5)


def test_training_logs_the_best_checkpoint_and_run_files(tracked_run):
    run_dir, _ = tracked_run
    training = logged_runs(run_dir)[0]
    (model,) = [a for a in training.artifacts if a.type == "model"]
    assert model.name == f"model-{training.run_id}"
    assert set(model.aliases) == {"best", "latest", "split-auto"}
    (entry,) = model.manifest.contents
    assert entry.path == "best.pt"
    assert entry.size == (run_dir / "checkpoints" / "best.pt").stat().st_size
    assert json.loads(model.metadata)["monitor"] == "val/roc_auc_macro"
    assert {"config.yaml", "splits.json"} <= set(training.files)


def test_evaluation_logs_the_predictions_table_curves_and_figures(tracked_run):
    run_dir, _ = tracked_run
    training, evaluation = logged_runs(run_dir)[:2]
    assert evaluation.run_id == training.run_id  # the same W&B run, continued
    names = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text())).class_names
    n_test = len(json.loads((run_dir / "splits.json").read_text())["test"])
    (row,) = [h for h in evaluation.history if "test/predictions" in h]
    entry = row["test/predictions"]
    assert entry["_type"] == "table-file" and entry["nrows"] == n_test
    table, artifact = evaluation.table("test/predictions")
    expected = ["id", "patient", "thumbnail"]
    expected += [f"{kind}/{n}" for kind in ("true", "prob", "pred") for n in names] + ["gradcam"]
    assert table["columns"] == expected and len(table["data"]) == n_test
    thumbs = [r[2] for r in table["data"]]
    assert all(t["_type"] == "image-file" and (t["height"], t["width"]) == (24, 74) for t in thumbs)
    overlays = [r[-1] for r in table["data"] if r[-1] is not None]
    assert overlays and all(o["_type"] == "image-file" and o["caption"] for o in overlays)
    per_scan = sum(c.size for c in artifact.manifest.contents) / n_test
    assert per_scan < 50_000  # a 1,000-scan split stays under 50 MB
    charts = {k: v["panel_config"]["panelDefId"] for k, v in evaluation.charts.items()}
    assert charts["test/auc_per_class"] == "wandb/bar/v0"
    assert any(k.startswith("test/roc/") for k in charts)
    assert any(k.startswith("test/pr/") for k in charts)
    assert row["test/figures/ROC curves"]["_type"] == "image-file"
    assert "report.html" in evaluation.files


def test_export_adds_a_version_of_the_same_model(tracked_run):
    run_dir, _ = tracked_run
    assert export_main(["--run", str(run_dir), "--format", "torchscript"]) == 0
    exported = [a for r in logged_runs(run_dir) for a in r.artifacts if "exported" in a.aliases]
    (artifact,) = exported
    assert artifact.name == f"model-{logged_runs(run_dir)[0].run_id}" and artifact.type == "model"
    assert [c.path for c in artifact.manifest.contents] == ["model.torchscript.pt"]
    assert "torchscript" in artifact.aliases


def test_a_resumed_run_continues_both_axes(monkeypatch, tiny_config, tmp_path):
    offline_env(monkeypatch, tmp_path)
    cfg, _ = tiny_config
    cfg.logging.wandb.mode, cfg.train.epochs = "offline", 1
    run_dir = tmp_path / "run"
    fit(cfg, run_dir)
    cfg.train.epochs = 2
    fit(cfg, run_dir, resume_from=run_dir / "checkpoints" / "last.pt")
    first, second = logged_runs(run_dir)
    assert first.run_id == second.run_id
    history = first.history + second.history
    assert [h["epoch"] for h in history if "epoch" in h] == [1, 2]
    steps = [h["trainer/global_step"] for h in history if "trainer/global_step" in h]
    assert steps == list(range(1, len(steps) + 1))  # no step twice, none missing
    models = [a.name for r in (first, second) for a in r.artifacts if a.type == "model"]
    assert models == [f"model-{first.run_id}"] * 2  # versions of one artifact


@pytest.mark.parametrize(
    ("env_mode", "configured", "api_key", "expected"),
    [
        ("", "auto", "", "offline"),
        ("", "auto", "x" * 40, "online"),
        ("", "offline", "x" * 40, "offline"),
        ("disabled", "auto", "x" * 40, "disabled"),
        ("offline", "online", "x" * 40, "offline"),
    ],
)
def test_the_mode_follows_credentials_and_wandb_mode(
    monkeypatch, tmp_path, env_mode, configured, api_key, expected
):
    offline_env(monkeypatch, tmp_path)
    if env_mode:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    if api_key:
        monkeypatch.setenv("WANDB_API_KEY", api_key)
    assert resolve_mode(configured)[0] == expected


def test_wandb_login_netrc_counts_as_credentials(monkeypatch, tmp_path):
    offline_env(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:8080")
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1:8080\n  login user\n  password {'k' * 40}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_mode("auto")[0] == "online"


@pytest.fixture
def silent_server():
    """A local socket that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in accepted:
        conn.close()


def test_auto_with_credentials_falls_back_within_the_timeout(
    monkeypatch, tmp_path, tiny_config, silent_server
):
    offline_env(monkeypatch, tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    cfg, _ = tiny_config
    cfg.logging.wandb.mode, cfg.logging.wandb.init_timeout = "auto", 3.0
    start = time.monotonic()
    with pytest.warns(UserWarning, match=r"online init failed .*logging offline.*wandb sync"):
        tracker = Tracker(cfg, tmp_path / "run")
    assert time.monotonic() - start < 3.0 + 15  # the timeout, and the offline start
    assert tracker.mode == "offline" and tracker.active
    tracker.log_epoch({"epoch": 1, "step": 1, "lr": 0.1, "train/loss": 0.5}, [])
    tracker.finish()
    assert [h["epoch"] for h in logged_runs(tmp_path / "run")[0].history] == [1]


def test_multiclass_evaluation_gets_the_native_confusion_matrix(monkeypatch, tmp_path):
    offline_env(monkeypatch, tmp_path)
    cfg = config_from_dict(tiny_raw_config(tmp_path, tmp_path))
    cfg.logging.wandb.mode = "offline"
    names = ["normal", "benign", "malignant"]
    task = MultiClassTask(names)
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], size=12)
    truth = np.eye(3)[np.arange(12) % 3]
    decided = task.decisions(probs)
    metrics = {"default": {f"auc/{n}": {"value": 0.7, "lo": 0.5, "hi": 0.9} for n in names}}
    rows = [[str(i), int(truth[i].argmax())] for i in range(12)]
    tracker = Tracker(cfg, tmp_path / "run")
    tracker.log_evaluation(
        EvaluationLog(
            "val", names, probs, truth, ["id", "class"], rows, metrics,
            class_index=(task.class_indices(truth), task.class_indices(decided)),
        )
    )  # fmt: skip
    tracker.finish()
    (run,) = logged_runs(tmp_path / "run")
    charts = {k: v["panel_config"]["panelDefId"] for k, v in run.charts.items()}
    assert charts["val/confusion_matrix"] == "wandb/confusion_matrix/v1"
    assert {f"val/pr/{n}" for n in names} <= set(charts)
    assert run.history[0]["val/predictions"]["nrows"] == 12
