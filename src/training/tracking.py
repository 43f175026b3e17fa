"""Weights & Biases tracking: the one home of every W&B call; a W&B failure never stops training.

``logging.wandb.mode: auto`` (the default) goes online when W&B credentials exist
(``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or the netrc entry ``wandb login`` writes) and
the server answers within ``init_timeout``; otherwise it logs offline into
``<run>/wandb/offline-run-*`` and prints one line saying why, with the ``wandb sync`` command
that uploads it. ``WANDB_MODE`` in the environment wins over the config. A resumed run continues
the same W&B run id.

Axes: W&B's own step is the optimizer step. Per step ``train/loss`` and ``lr`` are logged
against ``trainer/global_step``; per epoch ``val/*``, ``train/epoch_loss`` against ``epoch``
(``define_metric``). An epoch's rows are sent once its checkpoint is written, so a resumed run
continues both axes without a repeated or a missing point.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.config import Config, config_to_dict

STEP_AXIS, EPOCH_AXIS = "trainer/global_step", "epoch"
STEP_METRICS = ("train/loss", "lr")
EPOCH_METRICS = ("val/*", "train/epoch_loss")
_ANNOUNCED: set[Path] = set()  # run folders whose offline line this process has printed


def has_credentials() -> bool:
    """Whether W&B credentials are configured: the environment or ``wandb login``'s netrc entry
    for the server (``WANDB_BASE_URL``, else W&B's default)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        import wandb
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth

        host = wandb.env.get_base_url() or wandb.Settings().base_url
        return bool(read_netrc_auth(host=host))
    except Exception:  # an unreadable or malformed netrc counts as no credentials
        return False


def resolve_mode(configured: str) -> tuple[str, str]:
    """(mode to start W&B in, why it is offline or off when that was not asked for)."""
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return {"dryrun": "offline", "run": "online"}.get(env, env), ""
    if configured != "auto":
        return configured, ""
    if has_credentials():
        return "online", ""
    return "offline", "no W&B credentials: set WANDB_API_KEY or run `wandb login`"


@dataclass
class Picture:
    """An image cell of a W&B table: uint8 pixels (H, W) or (H, W, 3) and a caption."""

    pixels: np.ndarray
    caption: str = ""


@dataclass
class EvaluationLog:
    """What an evaluation of a split sends to W&B: the predictions table (one row per scan;
    ``Picture`` cells become images), per-class curves, the multi-class confusion matrix
    (``class_index``: true and decided class per scan, None for other tasks), the AUC bar chart,
    the metrics with CIs and the report's figures."""

    split: str
    class_names: list[str]
    probs: np.ndarray
    truth: np.ndarray
    columns: list[str]
    rows: list[list[Any]]
    metrics: Mapping[str, Mapping[str, Mapping[str, float]]]
    figures: Mapping[str, Path] = field(default_factory=dict)
    class_index: tuple[np.ndarray, np.ndarray] | None = None


class Tracker:
    """A thin, fault-tolerant wrapper over ``wandb``: every call is optional and guarded."""

    def __init__(self, cfg: Config, run_dir: Path, run_id: str = "", enabled: bool = True):
        self.run = None
        self.run_id = run_id
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.pending: list[tuple[int, dict[str, Any]]] = []  # rows W&B has not taken yet
        self.mode, why = resolve_mode(cfg.logging.wandb.mode) if enabled else ("disabled", "")
        if self.mode == "disabled":
            return
        try:
            self._init(self.mode)
        except Exception as err:
            self._fall_back(f"W&B {self.mode} init failed ({_first_line(err)})")
        if why and self.mode == "offline" and self.run_dir not in _ANNOUNCED:
            _ANNOUNCED.add(self.run_dir)  # once per run folder, not again for its evaluation
            print(f"W&B offline ({why}); upload later with `{self.sync_command}`", flush=True)

    def _fall_back(self, what: str) -> None:
        """After a W&B failure: online goes offline (same run id); offline goes off."""
        if self.mode == "online":
            with contextlib.suppress(Exception):
                self.run.finish(exit_code=1)
            try:
                self._init("offline")
                warnings.warn(
                    f"{what}; logging offline instead; upload later with `{self.sync_command}`",
                    stacklevel=3,
                )
                return
            except Exception as err:
                what = f"W&B offline init failed ({_first_line(err)})"
        warnings.warn(f"{what}; W&B off for this run (metrics.csv has every epoch)", stacklevel=3)
        self.run, self.mode = None, "disabled"

    def _init(self, mode: str) -> None:
        import wandb

        cfg, w = self.cfg, self.cfg.logging.wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=w.project,
            entity=w.entity or None,
            name=self.run_dir.name,
            dir=str(self.run_dir),
            mode=mode,
            id=self.run_id or None,
            resume="allow" if self.run_id else None,
            config=config_to_dict(cfg),
            tags=w.tags or None,
            group=w.group or None,
            settings=wandb.Settings(init_timeout=w.init_timeout, console="off"),
        )
        self.run_id = self.run.id
        self.mode = mode
        self.run.define_metric(STEP_AXIS)
        self.run.define_metric(EPOCH_AXIS)
        for name in STEP_METRICS:
            self.run.define_metric(name, step_metric=STEP_AXIS)
        for name in EPOCH_METRICS:
            self.run.define_metric(name, step_metric=EPOCH_AXIS)

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # tracking is never worth a crashed run
            warnings.warn(f"W&B {what} failed ({err}); training goes on", stacklevel=3)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Log a row; a failure falls back (online -> offline) and the row is sent again."""
        if self.run is None:
            return
        clean = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        self.pending.append((step, clean))
        for _ in range(2):  # the first try, and once more after falling back
            try:
                while self.pending:
                    self.run.log(self.pending[0][1], step=self.pending[0][0])
                    self.pending.pop(0)
                return
            except Exception as err:
                self._fall_back(f"W&B log failed ({_first_line(err)})")
                if self.run is None:
                    return

    def log_epoch(self, row: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> None:
        """An epoch's optimizer steps (``train_epoch``'s rows: ``step``, ``loss``, ``lr``) as
        ``train/loss`` and ``lr`` against ``trainer/global_step``, then its metrics row
        (``metrics.csv``'s) against ``epoch``; W&B's own step is the optimizer step."""
        for s in steps:
            step = int(s["step"])
            self.log({STEP_AXIS: step, "train/loss": s["loss"], "lr": s["lr"]}, step=step)
        epoch_row = {k: v for k, v in row.items() if k not in ("step", "lr", "train/loss")}
        epoch_row["train/epoch_loss"] = row["train/loss"]
        self.log(epoch_row, step=int(row["step"]))

    def save_files(self, paths: Sequence[Path]) -> None:
        """Run files (config, splits, report) beside the run on the dashboard's Files tab."""
        for path in (Path(p) for p in paths if Path(p).is_file()):
            self._guard(
                f"save {path.name}",
                lambda p=path: self.run.save(str(p), base_path=str(p.parent), policy="now"),
            )

    def log_model(
        self, files: Mapping[str, Path], aliases: Sequence[str], metadata: Mapping[str, Any]
    ) -> None:
        """``files`` (name in the artifact -> path) as a version of the run's ``model``
        artifact ``model-<run id>``; W&B makes no new version for files it already holds."""

        def send() -> None:
            import wandb

            artifact = wandb.Artifact(f"model-{self.run_id}", type="model", metadata=dict(metadata))
            for name, path in files.items():
                artifact.add_file(str(path), name=name)
            self.run.log_artifact(artifact, aliases=list(aliases))

        self._guard("model artifact", send)

    def log_evaluation(self, ev: EvaluationLog) -> None:
        """The predictions table, curves, confusion matrix, AUC bars and figures of a split."""
        self._guard("evaluation logging", lambda: self.run.log(_evaluation_media(ev)))

    def summary(self, values: dict[str, Any]) -> None:
        self._guard("summary", lambda: self.run.summary.update(values))

    def finish(self) -> None:
        self._guard("finish", lambda: self.run.finish())

    @property
    def active(self) -> bool:
        """Whether a W&B run takes the calls (False: off, or fallen back to off)."""
        return self.run is not None

    @property
    def sync_command(self) -> str:
        """The command that uploads the run folder's offline W&B runs (training, resumes,
        evaluations and exports: each a part of the same W&B run)."""
        return f"wandb sync {self.run_dir / 'wandb'}/offline-run-*"

    @property
    def location(self) -> str:
        """Where the run went, for the end-of-run summary."""
        if self.run is None:
            return "W&B off"
        if self.mode == "offline":
            return f"W&B offline run: upload with `{self.sync_command}`"
        return f"W&B run {getattr(self.run, 'url', self.run_id)}"


def reopen_tracker(cfg: Config, run_dir: Path, run_id: str) -> Tracker | None:
    """The W&B run of a finished training run (continued by its id), for evaluation and export;
    None when its config or ``WANDB_MODE`` turns tracking off."""
    if resolve_mode(cfg.logging.wandb.mode)[0] == "disabled":
        return None
    return Tracker(cfg, run_dir, run_id)


def _evaluation_media(ev: EvaluationLog) -> dict[str, Any]:
    import wandb

    def cell(value: Any) -> Any:
        if isinstance(value, Picture):
            return wandb.Image(value.pixels, caption=value.caption or None)
        return value

    split, logged = ev.split, {}
    table = wandb.Table(columns=list(ev.columns))
    for row in ev.rows:
        table.add_data(*(cell(v) for v in row))
    logged[f"{split}/predictions"] = table
    for j, name in enumerate(ev.class_names):
        known = ~np.isnan(ev.truth[:, j])  # unknown labels (data.missing_labels) left out
        y = ev.truth[known, j].astype(int)
        if len(np.unique(y)) == 2:
            p = np.c_[1 - ev.probs[known, j], ev.probs[known, j]]
            labels = ["negative", name]
            logged[f"{split}/roc/{name}"] = wandb.plot.roc_curve(
                y, p, labels=labels, classes_to_plot=[1], title=f"ROC {name}"
            )
            logged[f"{split}/pr/{name}"] = wandb.plot.pr_curve(
                y, p, labels=labels, classes_to_plot=[1], title=f"Precision-recall {name}"
            )
    if ev.class_index is not None:
        true_idx, decided_idx = ev.class_index
        logged[f"{split}/confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=true_idx.tolist(), preds=decided_idx.tolist(), class_names=ev.class_names
        )
    default = ev.metrics["default"]
    bars = wandb.Table(columns=["class", "auc", "lo", "hi"])
    for name in ev.class_names:
        m = default.get(f"auc/{name}")
        if m is not None and not math.isnan(m["value"]):
            bars.add_data(f"{name} [{m['lo']:.2f}, {m['hi']:.2f}]", m["value"], m["lo"], m["hi"])
    logged[f"{split}/auc_per_class"] = wandb.plot.bar(
        bars, "class", "auc", title=f"AUC per class with CI ({split})"
    )
    ci = wandb.Table(columns=["decision", "metric", "value", "lo", "hi"])
    for decision, values in ev.metrics.items():
        for key, v in values.items():
            ci.add_data(decision, key, v["value"], v["lo"], v["hi"])
    logged[f"{split}/metrics_ci"] = ci
    for title, path in ev.figures.items():
        logged[f"{split}/figures/{title}"] = wandb.Image(str(path))
    return logged


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:200]
