"""Build a Config from plain data and validate it: types and ranges per key as the schema states
them, then the checks that relate keys to each other. Every error is one line naming the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from src.config.schema import WINDOW_PRESETS, Config, ConfigError, Range


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        return _type_name(get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return f"a list of {_type_name(get_args(tp)[0])}s"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a float", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
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


_NOT_CONVERTED = object()


def _coerce_scalar(value: Any, tp: Any) -> Any:
    """``value`` as ``tp`` (bool, int, float, str or Any), or ``_NOT_CONVERTED``."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and number and isinstance(value, int):
        return value
    if tp is float and number:
        return float(value)
    if tp is float and isinstance(value, str):
        # PyYAML reads 3e-4 (no dot) as a string: accept any string float() understands
        try:
            return float(value)
        except ValueError:
            return _NOT_CONVERTED
    if tp is str and (isinstance(value, str) or number):
        return str(value)
    if tp is Any:
        return value
    return _NOT_CONVERTED


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, key)
    if origin is Annotated:
        base, *bounds = get_args(tp)
        value = _coerce(value, base, key)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for bound in (b for b in bounds if isinstance(b, Range)):
            for i, x in items:
                if x not in bound:
                    where = key if i is None else f"{key}[{i}]"
                    raise ConfigError(f"{where}: must be {bound.describe()}, got {x!r}")
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    out = _coerce_scalar(value, tp)
    if out is _NOT_CONVERTED:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return out


def _build(cls: type, raw: Any, prefix: str = "") -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = prefix or "the top level"
        raise ConfigError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names), key=str)
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
    """What ``data`` must hold beyond each key's own type and range."""
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
    _need(
        not d.spacing or len(d.spacing) == len(d.spatial_size),
        "data.spacing",
        f"needs {len(d.spatial_size)} values to match data.spatial_size, or [] for none",
    )
    _need(
        not d.spacing or len(d.spatial_size) == 3,
        "data.spacing",
        "2D images (PNG/JPEG carry no spacing) are not resampled: set data.spacing: []",
    )
    _need(d.intensity_max > d.intensity_min, "data.intensity_max", "must exceed intensity_min")
    _check_windows(cfg)
    _need(
        not d.ram_cache_shard or "ram" in d.cache,
        "data.ram_cache_shard",
        "shards the RAM cache; set data.cache to ram or disk+ram, or turn it off",
    )
    _need(
        d.phantom.kind == "none" or not d.medmnist_npz,
        "data.medmnist_npz",
        "set either data.medmnist_npz or data.phantom.kind, not both",
    )
    for key in ("missing_labels", "uncertain_labels"):
        _need(
            getattr(d, key) == "error" or d.task != "multiclass",
            f"data.{key}",
            "applies to 0/1 label cells (multilabel, binary); a multiclass task needs error",
        )
    s = d.split
    _need(
        s.val_fraction + s.test_fraction < 1,
        "data.split.test_fraction",
        "val_fraction + test_fraction must leave training data",
    )
    _need(0 <= s.fold < s.n_folds, "data.split.fold", f"must be in [0, {s.n_folds})")
    _need(
        s.strategy != "center_holdout" or bool(s.holdout_centers),
        "data.split.holdout_centers",
        "center_holdout needs the names of the centres to hold out",
    )
    _need(
        all(0 <= ax < len(d.spatial_size) for ax in d.augment.flip_axes),
        "data.augment.flip_axes",
        f"axes must be in [0, {len(d.spatial_size)})",
    )


def _check_windows(cfg: Config) -> None:
    d, presets = cfg.data, ", ".join(WINDOW_PRESETS)
    for i, w in enumerate(d.windows):
        key = f"data.windows[{i}]"
        if isinstance(w, str):
            _need(w in WINDOW_PRESETS, key, f"unknown preset {w!r}; presets: {presets}")
        else:
            _need(len(w) == 2, key, f"expected [min, max] or a preset ({presets}), got {w!r}")
            _need(w[1] > w[0], key, f"max must exceed min, got {w!r}")
    _need(
        not d.windows or d.intensity_mode == "window",
        "data.windows",
        f"windows scale intensities themselves; set data.intensity_mode: window, not "
        f"{d.intensity_mode}",
    )
    _need(
        not d.windows or len(d.spatial_size) == 3,
        "data.windows",
        "HU windows are for 3D CT; 2D images have one grey channel",
    )
    _need(
        d.phantom.format == "nifti" or d.phantom.kind != "xray",
        "data.phantom.format",
        "dicom is written for the ct phantom only",
    )


def _check_training(cfg: Config) -> None:
    """What training and evaluation keys must hold beyond their own type and range."""
    t, classes = cfg.train, ", ".join(cfg.class_names)
    _need(len(cfg.optim.betas) == 2, "optim.betas", "two in [0, 1)")
    pretrained = bool(cfg.model.pretrained)
    _need(
        pretrained or cfg.model.freeze == "none",
        "model.freeze",
        "freezes pretrained layers; set model.pretrained or model.freeze: none",
    )
    _need(
        pretrained or cfg.optim.backbone_lr_scale == 1,
        "optim.backbone_lr_scale",
        "scales the learning rate of pretrained layers; set model.pretrained or leave it at 1",
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
    unknown = [c for c in t.watch_classes if c not in cfg.class_names]
    first = unknown[0] if unknown else ""
    _need(not unknown, "train.watch_classes", f"{first!r} is not a class; classes: {classes}")
    for name, target in cfg.evaluation.sensitivity_targets.items():
        key = f"evaluation.sensitivity_targets.{name}"
        _need(name in cfg.class_names, key, f"not a class; classes: {classes}")
        ok = isinstance(target, int | float) and not isinstance(target, bool) and 0 < target <= 1
        _need(ok, key, f"target sensitivity must be in (0, 1], got {target!r}")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a plain mapping (as read from YAML)."""
    cfg = _build(Config, raw)
    _check_data(cfg)
    _check_training(cfg)
    return cfg
