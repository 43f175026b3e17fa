"""Build a Config from plain data and validate it: the type of every key, then the ranges and
the checks that relate keys to each other. Every error is one line naming the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from src.config.schema import Config, ConfigError


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}s"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a float", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        if all(e.startswith(f"{key}: expected") for e in errors):  # e.g. true, false or 'auto'
            names = " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
            raise ConfigError(f"{key}: expected {names}, got {value!r}")
        raise ConfigError(errors[0])
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        # PyYAML reads 3e-4 (no dot) as a string: accept any string float() understands
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif tp is Any:
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str = "") -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = prefix or "the top level"
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{key}: unknown key; known keys here are: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], f"{prefix}.{name}" if prefix else name)
    return cls(**kwargs)


def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _check_data(cfg: Config) -> None:
    """Ranges and consistency of ``data`` that types alone cannot express."""
    d = cfg.data
    _need(bool(d.csv), "data.csv", "is required: the path of the labels CSV")
    _need(bool(d.image_root), "data.image_root", "is required: the folder holding the images")
    _need(bool(d.label_columns), "data.label_columns", "is required: the CSV column(s) of labels")
    if d.class_names and d.task == "multilabel":
        _need(
            len(d.class_names) == len(d.label_columns),
            "data.class_names",
            f"has {len(d.class_names)} names for {len(d.label_columns)} label columns",
        )
    if d.task in ("multiclass", "binary"):
        _need(
            len(d.label_columns) == 1,
            "data.label_columns",
            f"a {d.task} task reads one label column, got {len(d.label_columns)}",
        )
    if d.task == "multiclass":
        _need(len(d.class_names) >= 2, "data.class_names", "a multiclass task needs >= 2 names")
    _need(len(d.spatial_size) in (2, 3), "data.spatial_size", "needs 2 (2D) or 3 (3D) sizes")
    _need(all(s > 0 for s in d.spatial_size), "data.spatial_size", "sizes must be positive")
    _need(
        not d.spacing or len(d.spacing) == len(d.spatial_size),
        "data.spacing",
        f"needs {len(d.spatial_size)} values to match data.spatial_size, or [] for none",
    )
    _need(all(s > 0 for s in d.spacing), "data.spacing", "spacings must be positive (mm)")
    _need(
        not d.spacing or len(d.spatial_size) == 3,
        "data.spacing",
        "2D images (PNG/JPEG carry no spacing) are not resampled: set data.spacing: []",
    )
    _need(d.intensity_max > d.intensity_min, "data.intensity_max", "must exceed intensity_min")
    _need(
        not d.ram_cache_shard or "ram" in d.cache,
        "data.ram_cache_shard",
        "shards the RAM cache; set data.cache to ram or disk+ram, or turn it off",
    )
    s = d.split
    _need(0 <= s.val_fraction < 1, "data.split.val_fraction", "must be in [0, 1)")
    _need(0 <= s.test_fraction < 1, "data.split.test_fraction", "must be in [0, 1)")
    _need(
        s.val_fraction + s.test_fraction < 1,
        "data.split.test_fraction",
        "val_fraction + test_fraction must leave training data",
    )
    _need(s.n_folds >= 2, "data.split.n_folds", "must be >= 2")
    _need(0 <= s.fold < s.n_folds, "data.split.fold", f"must be in [0, {s.n_folds})")
    _need(
        s.strategy != "center_holdout" or bool(s.holdout_centers),
        "data.split.holdout_centers",
        "center_holdout needs the names of the centres to hold out",
    )
    a = d.augment
    for name in ("flip_prob", "affine_prob", "intensity_prob"):
        _need(0 <= getattr(a, name) <= 1, f"data.augment.{name}", "must be a probability in [0, 1]")
    _need(
        all(0 <= ax < len(d.spatial_size) for ax in a.flip_axes),
        "data.augment.flip_axes",
        f"axes must be in [0, {len(d.spatial_size)})",
    )
    _need(0 <= a.contrast_gamma < 1, "data.augment.contrast_gamma", "in [0, 1)")
    _need(
        d.phantom.kind == "none" or not d.medmnist_npz,
        "data.medmnist_npz",
        "set either data.medmnist_npz or data.phantom.kind, not both",
    )
    _need(d.phantom.n_patients >= 10, "data.phantom.n_patients", "must be >= 10")


def _check_training(cfg: Config) -> None:
    """Ranges and consistency of the training, logging and evaluation keys."""
    o, t = cfg.optim, cfg.train
    _need(cfg.logging.wandb.init_timeout > 0, "logging.wandb.init_timeout", "must be > 0 (s)")
    _need(o.lr > 0, "optim.lr", f"must be positive, got {o.lr}")
    _need(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "two in [0, 1)")
    _need(o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
    _need(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
    _need(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 turns clipping off)")
    _need(t.epochs >= 1, "train.epochs", "must be >= 1")
    _need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _need(t.accumulate >= 1, "train.accumulate", "must be >= 1")
    _need(t.patience >= 1, "train.patience", "must be >= 1")
    _need(t.min_delta >= 0, "train.min_delta", "must be >= 0")
    _need(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", "must be >= 1")
    _need(cfg.checkpoint.keep_last_n >= 0, "checkpoint.keep_last_n", "must be >= 0 (0 keeps none)")
    _need(t.num_workers >= -1, "train.num_workers", "must be >= 0, or -1 for automatic")
    _need(t.threads >= 0, "train.threads", "must be >= 0 (0 chooses from the cores available)")
    _need(t.prefetch_factor >= 0, "train.prefetch_factor", "must be >= 0 (0 chooses for you)")
    unknown = [c for c in t.watch_classes if c not in cfg.class_names]
    _need(
        not unknown,
        "train.watch_classes",
        f"{unknown[0] if unknown else ''!r} is not a class; classes: {', '.join(cfg.class_names)}",
    )
    _need(
        t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
        "train.device",
        f"expected auto, cpu or cuda[:N], got {t.device!r}",
    )
    _need(
        t.monitor.startswith(("val/", "train/")),
        "train.monitor",
        "must name a logged metric, e.g. val/roc_auc_macro or val/loss",
    )
    e = cfg.evaluation
    _need(e.bootstrap >= 0, "evaluation.bootstrap", "must be >= 0 (0 turns the CIs off)")
    _need(0 < e.confidence < 1, "evaluation.confidence", "must be in (0, 1), e.g. 0.95")
    _need(e.gradcam_per_group >= 0, "evaluation.gradcam_per_group", "must be >= 0")
    for name, target in e.sensitivity_targets.items():
        key = f"evaluation.sensitivity_targets.{name}"
        _need(name in cfg.class_names, key, f"not a class; classes: {', '.join(cfg.class_names)}")
        ok = isinstance(target, int | float) and not isinstance(target, bool) and 0 < target <= 1
        _need(ok, key, f"target sensitivity must be in (0, 1], got {target!r}")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a plain mapping (as read from YAML)."""
    cfg = _build(Config, raw)
    _check_data(cfg)
    _check_training(cfg)
    return cfg
