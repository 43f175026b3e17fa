"""The run configuration's schema: one dataclass per section.

``Annotated[..., Range(...)]`` states the values a number may take, next to its key; the loader
enforces it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal


class ConfigError(ValueError):
    """A user's configuration mistake; the message names the dotted key and what to do."""


@dataclass(frozen=True)
class Range:
    """The values a number (or each number of a list) may take, written as the reference and
    the error message show them: ``">= 1"``, ``"> 0"``, ``"positive"``, ``"[0, 1)"``."""

    text: str

    def __contains__(self, x: float) -> bool:
        t = self.text
        if t == "positive":
            return x > 0
        if t.startswith(">="):
            return x >= float(t[2:])
        if t.startswith(">"):
            return x > float(t[1:])
        low, high = (float(v) for v in t[1:-1].split(","))
        return (low <= x if t[0] == "[" else low < x) and (x <= high if t[-1] == "]" else x < high)

    def describe(self) -> str:
        """``positive``, ``>= 1`` or ``in [0, 1)``: what follows "must be" in an error."""
        return self.text if self.text[0] in "p>" else f"in {self.text}"


Probability = Annotated[float, Range("[0, 1]")]
Fraction = Annotated[float, Range("[0, 1)")]
AtLeastOne = Annotated[int, Range(">= 1")]
NonNegative = Annotated[int, Range(">= 0")]


@dataclass
class SplitConfig:
    strategy: Literal["auto", "column", "stratified", "center_holdout", "kfold"] = "auto"
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.15
    seed: int = 0
    holdout_centers: list[str] = field(default_factory=list)
    n_folds: Annotated[int, Range(">= 2")] = 5
    fold: int = 0


@dataclass
class AugmentConfig:
    flip_prob: Probability = 0.5
    flip_axes: list[int] = field(default_factory=lambda: [0])
    affine_prob: Probability = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.0
    intensity_prob: Probability = 0.5
    intensity_shift: float = 0.05
    intensity_scale: float = 0.1
    noise_std: float = 0.0
    contrast_gamma: Fraction = 0.0  # gamma drawn from [1 - g, 1 + g]; 0 = off


@dataclass
class PhantomConfig:
    kind: Literal["none", "ct", "xray"] = "none"
    n_patients: Annotated[int, Range(">= 10")] = 300
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
    spacing: Annotated[list[float], Range("positive")] = field(default_factory=list)
    spatial_size: Annotated[list[int], Range("positive")] = field(
        default_factory=lambda: [64, 64, 48]
    )
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
    lr: Annotated[float, Range("positive")] = 1e-3
    weight_decay: Annotated[float, Range(">= 0")] = 1e-4
    betas: Annotated[list[float], Range("[0, 1)")] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: Annotated[float, Range(">= 0")] = 1.0
    min_lr_ratio: Annotated[float, Range("[0, 1]")] = 0.01
    grad_clip: Annotated[float, Range(">= 0")] = 1.0


@dataclass
class TrainConfig:
    epochs: AtLeastOne = 20
    batch_size: AtLeastOne = 8
    accumulate: AtLeastOne = 1
    seed: int = 0
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    num_workers: Annotated[int, Range(">= -1")] = -1
    threads: NonNegative = 0
    pin_memory: bool | Literal["auto"] = "auto"
    persistent_workers: bool | Literal["auto"] = "auto"
    prefetch_factor: NonNegative = 0
    pos_weight: bool = False
    class_weights: bool = False
    monitor: str = "val/roc_auc_macro"
    monitor_mode: Literal["max", "min"] = "max"
    patience: AtLeastOne = 10
    min_delta: Annotated[float, Range(">= 0")] = 0.0
    eval_test: bool = True
    watch_classes: list[str] = field(default_factory=list)
    sync_batchnorm: bool = False  # under torchrun on GPUs: BatchNorm statistics over all ranks
    max_nonfinite_steps: AtLeastOne = 5


@dataclass
class CheckpointConfig:
    save_best: bool = True
    keep_last_n: NonNegative = 0


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "radiology-classifier"
    entity: str = ""
    tags: list[str] = field(default_factory=list)
    init_timeout: Annotated[float, Range("positive")] = 60.0


@dataclass
class LoggingConfig:
    output_dir: str = "outputs"
    run_name: str = ""
    progress: bool | Literal["auto"] = "auto"  # auto: bars only when stderr is a terminal
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvaluationConfig:
    """After training: decision thresholds, bootstrap CIs, the report's Grad-CAM gallery."""

    threshold_rule: Literal["youden", "fixed"] = "youden"  # fixed: 0.5 for every class
    sensitivity_targets: dict[str, float] = field(default_factory=dict)  # class -> sensitivity
    bootstrap: NonNegative = 1000
    confidence: Annotated[float, Range("(0, 1)")] = 0.95
    seed: int = 0
    gradcam_per_group: NonNegative = 2  # scans per (finding, TP/FP/FN) in the report; 0 = none
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


def show_progress(cfg: Config) -> bool:
    """Whether to draw progress bars: ``logging.progress``, with ``auto`` meaning only when
    stderr is a terminal (so a redirected log is not flooded with bar updates)."""
    progress = cfg.logging.progress
    if progress == "auto":
        return bool(sys.stderr is not None and sys.stderr.isatty())
    return bool(progress)
