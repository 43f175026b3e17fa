"""One typed, nested run configuration loaded from YAML and validated once at start-up.

Every error names the dotted key (``optim.lr: expected a float, got 'fast'``). Command-line
overrides use the same keys (``--set optim.lr=3e-4 train.epochs=20``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A user's configuration mistake; the message names the dotted key and what to do."""


@dataclass
class SplitConfig:
    strategy: Literal["auto", "column", "stratified", "center_holdout", "kfold"] = "auto"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    holdout_centers: list[str] = field(default_factory=list)
    n_folds: int = 5
    fold: int = 0


@dataclass
class AugmentConfig:
    flip_prob: float = 0.5
    flip_axes: list[int] = field(default_factory=lambda: [0])
    affine_prob: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.0
    intensity_prob: float = 0.5
    intensity_shift: float = 0.05
    intensity_scale: float = 0.1
    noise_std: float = 0.0
    contrast_gamma: float = 0.0  # gamma drawn from [1 - g, 1 + g]; 0 = off


@dataclass
class PhantomConfig:
    kind: Literal["none", "ct", "xray"] = "none"
    n_patients: int = 300
    seed: int = 0


@dataclass
class DataConfig:
    csv: str = ""
    image_root: str = ""
    task: Literal["multilabel", "multiclass", "binary"] = "multilabel"
    image_column: str = "image"
    label_columns: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    patient_column: str = "patient_id"
    patient_id_regex: str = ""
    center_column: str = "center"
    split_column: str = "split"
    find_images: Literal["direct", "recursive"] = "direct"
    test_csv: str = ""
    test_image_root: str = ""
    spacing: list[float] = field(default_factory=list)
    spatial_size: list[int] = field(default_factory=lambda: [64, 64, 48])
    resize_mode: Literal["pad_crop", "resize", "fit"] = "pad_crop"
    orientation: str = "RAS"
    intensity_min: float = -1000.0
    intensity_max: float = 400.0
    # window: intensity_min..max -> [0, 1]; bit_depth: stored range (8-16 bit) -> [0, 1];
    # percentile: the image's 0.5..99.5 percentiles -> [0, 1]
    intensity_mode: Literal["window", "bit_depth", "percentile"] = "window"
    cache: Literal["none", "disk", "ram", "disk+ram"] = "disk+ram"
    cache_dir: str = "outputs/cache"
    cache_dtype: Literal["float32", "float16"] = "float32"
    ram_cache_shard: bool = False  # under torchrun: each rank caches only its own fixed shard
    on_bad_sample: Literal["error", "skip"] = "error"
    allow_absolute_paths: bool = False
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    medmnist_npz: str = ""  # a MedMNIST .npz imported into image_root on first use
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    name: str = "resnet3d"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    accumulate: int = 1
    seed: int = 0
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    num_workers: int = -1
    threads: int = 0
    pin_memory: bool | Literal["auto"] = "auto"
    persistent_workers: bool | Literal["auto"] = "auto"
    prefetch_factor: int = 0
    pos_weight: bool = False
    class_weights: bool = False
    monitor: str = "val/roc_auc_macro"
    monitor_mode: Literal["max", "min"] = "max"
    patience: int = 10
    min_delta: float = 0.0
    eval_test: bool = True
    watch_classes: list[str] = field(default_factory=list)
    sync_batchnorm: bool = False  # under torchrun on GPUs: BatchNorm statistics over all ranks
    max_nonfinite_steps: int = 5


@dataclass
class CheckpointConfig:
    save_best: bool = True
    keep_last_n: int = 0


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "radiology-classifier"
    entity: str = ""
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 60.0


@dataclass
class LoggingConfig:
    output_dir: str = "outputs"
    run_name: str = ""
    progress: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvaluationConfig:
    """After training: decision thresholds, bootstrap CIs, the report's Grad-CAM gallery."""

    threshold_rule: Literal["youden", "fixed"] = "youden"  # fixed: 0.5 for every class
    sensitivity_targets: dict[str, float] = field(default_factory=dict)  # class -> sensitivity
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    gradcam_per_group: int = 2  # scans per (finding, TP/FP/FN) in the report; 0 = none
    gradcam_method: Literal["gradcam", "gradcam++", "guided"] = "guided"  # reporting.gradcam
    gradcam_layer: str = ""  # CNN module for the maps; "" = the model's automatic choice
    gradcam_shift_average: bool = True  # CNN maps: mean over half-stride input shifts (2^dims)
    report: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @property
    def spatial_dims(self) -> int:
        return len(self.data.spatial_size)

    @property
    def class_names(self) -> list[str]:
        return list(self.data.class_names or self.data.label_columns)


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


def _check(cfg: Config) -> None:
    """Range and consistency checks that types alone cannot express."""

    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {msg}")

    d, o, t = cfg.data, cfg.optim, cfg.train
    need(bool(d.csv), "data.csv", "is required: the path of the labels CSV")
    need(bool(d.image_root), "data.image_root", "is required: the folder holding the images")
    need(bool(d.label_columns), "data.label_columns", "is required: the CSV column(s) of labels")
    if d.class_names and d.task == "multilabel":
        need(
            len(d.class_names) == len(d.label_columns),
            "data.class_names",
            f"has {len(d.class_names)} names for {len(d.label_columns)} label columns",
        )
    if d.task in ("multiclass", "binary"):
        need(
            len(d.label_columns) == 1,
            "data.label_columns",
            f"a {d.task} task reads one label column, got {len(d.label_columns)}",
        )
    if d.task == "multiclass":
        need(len(d.class_names) >= 2, "data.class_names", "a multiclass task needs >= 2 names")
    need(len(d.spatial_size) in (2, 3), "data.spatial_size", "needs 2 (2D) or 3 (3D) sizes")
    need(all(s > 0 for s in d.spatial_size), "data.spatial_size", "sizes must be positive")
    need(
        not d.spacing or len(d.spacing) == len(d.spatial_size),
        "data.spacing",
        f"needs {len(d.spatial_size)} values to match data.spatial_size, or [] for none",
    )
    need(all(s > 0 for s in d.spacing), "data.spacing", "spacings must be positive (mm)")
    need(
        not d.spacing or len(d.spatial_size) == 3,
        "data.spacing",
        "2D images (PNG/JPEG carry no spacing) are not resampled: set data.spacing: []",
    )
    need(d.intensity_max > d.intensity_min, "data.intensity_max", "must exceed intensity_min")
    need(
        not d.ram_cache_shard or "ram" in d.cache,
        "data.ram_cache_shard",
        "shards the RAM cache; set data.cache to ram or disk+ram, or turn it off",
    )
    s = d.split
    need(0 <= s.val_fraction < 1, "data.split.val_fraction", "must be in [0, 1)")
    need(0 <= s.test_fraction < 1, "data.split.test_fraction", "must be in [0, 1)")
    need(
        s.val_fraction + s.test_fraction < 1,
        "data.split.test_fraction",
        "val_fraction + test_fraction must leave training data",
    )
    need(s.n_folds >= 2, "data.split.n_folds", "must be >= 2")
    need(0 <= s.fold < s.n_folds, "data.split.fold", f"must be in [0, {s.n_folds})")
    need(
        s.strategy != "center_holdout" or bool(s.holdout_centers),
        "data.split.holdout_centers",
        "center_holdout needs the names of the centres to hold out",
    )
    a = d.augment
    for name in ("flip_prob", "affine_prob", "intensity_prob"):
        need(0 <= getattr(a, name) <= 1, f"data.augment.{name}", "must be a probability in [0, 1]")
    need(
        all(0 <= ax < len(d.spatial_size) for ax in a.flip_axes),
        "data.augment.flip_axes",
        f"axes must be in [0, {len(d.spatial_size)})",
    )
    need(a.contrast_gamma >= 0 and a.contrast_gamma < 1, "data.augment.contrast_gamma", "in [0, 1)")
    unknown = [c for c in t.watch_classes if c not in cfg.class_names]
    need(
        not unknown,
        "train.watch_classes",
        f"{unknown[0] if unknown else ''!r} is not a class; classes: {', '.join(cfg.class_names)}",
    )
    need(
        d.phantom.kind == "none" or not d.medmnist_npz,
        "data.medmnist_npz",
        "set either data.medmnist_npz or data.phantom.kind, not both",
    )
    need(d.phantom.n_patients >= 10, "data.phantom.n_patients", "must be >= 10")
    need(cfg.logging.wandb.init_timeout > 0, "logging.wandb.init_timeout", "must be > 0 (s)")
    need(o.lr > 0, "optim.lr", f"must be positive, got {o.lr}")
    need(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "two in [0, 1)")
    need(o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0")
    need(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "must be in [0, 1]")
    need(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 turns clipping off)")
    need(t.epochs >= 1, "train.epochs", "must be >= 1")
    need(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(t.accumulate >= 1, "train.accumulate", "must be >= 1")
    need(t.patience >= 1, "train.patience", "must be >= 1")
    need(t.min_delta >= 0, "train.min_delta", "must be >= 0")
    need(t.max_nonfinite_steps >= 1, "train.max_nonfinite_steps", "must be >= 1")
    need(cfg.checkpoint.keep_last_n >= 0, "checkpoint.keep_last_n", "must be >= 0 (0 keeps none)")
    need(t.num_workers >= -1, "train.num_workers", "must be >= 0, or -1 for automatic")
    need(t.threads >= 0, "train.threads", "must be >= 0 (0 chooses from the cores available)")
    need(t.prefetch_factor >= 0, "train.prefetch_factor", "must be >= 0 (0 chooses for you)")
    need(
        t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
        "train.device",
        f"expected auto, cpu or cuda[:N], got {t.device!r}",
    )
    need(
        t.monitor.startswith(("val/", "train/")),
        "train.monitor",
        "must name a logged metric, e.g. val/roc_auc_macro or val/loss",
    )
    e = cfg.evaluation
    need(e.bootstrap >= 0, "evaluation.bootstrap", "must be >= 0 (0 turns the CIs off)")
    need(0 < e.confidence < 1, "evaluation.confidence", "must be in (0, 1), e.g. 0.95")
    need(e.gradcam_per_group >= 0, "evaluation.gradcam_per_group", "must be >= 0")
    for name, target in e.sensitivity_targets.items():
        key = f"evaluation.sensitivity_targets.{name}"
        need(name in cfg.class_names, key, f"not a class; classes: {', '.join(cfg.class_names)}")
        ok = isinstance(target, int | float) and not isinstance(target, bool) and 0 < target <= 1
        need(ok, key, f"target sensitivity must be in (0, 1], got {target!r}")


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a plain mapping (as read from YAML)."""
    cfg = _build(Config, raw)
    _check(cfg)
    return cfg


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are read as YAML (``[1,2]``, ``true``, ``3``)."""
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        key, text = pair.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        out.append((key.strip(), value))
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; a syntax error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):  # !!python/object and friends
            raise ConfigError(
                f"{path}{where}: YAML tag not allowed:{problem.split(' for the tag')[-1]}; "
                "a config holds plain values only"
            ) from None
        raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply ``key=value`` overrides and validate the result."""
    raw = load_yaml(path)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(raw, key, value)
    return config_from_dict(raw)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml, checkpoints and W&B)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
