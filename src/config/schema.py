"""The run configuration's schema: one dataclass per section, one docstring per key.

The docstring under each field is its meaning in ``docs/CONFIG.md`` (``python -m src.config
--reference docs/CONFIG.md`` writes it). ``Annotated[..., Range(...)]`` states the values a
number may take; the loader enforces it and the reference lists it.
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

# Named CT windows of data.windows, [min, max] in HU
WINDOW_PRESETS = {
    "lung": (-1000.0, 400.0),
    "mediastinum": (-160.0, 240.0),
    "bone": (-500.0, 1300.0),
}


@dataclass
class SplitConfig:
    """How images are split into train, validation and test (written once to splits.json)."""

    strategy: Literal["auto", "column", "stratified", "center_holdout", "kfold"] = "auto"
    """auto: column if the CSV has split values, else stratified; column: the CSV's split column;
    stratified: seeded, grouped by patient, stratified by label; center_holdout: holdout_centers
    are the test split; kfold: fold of n_folds is the validation split, the test split is the
    split column's test rows when the CSV has a split column, else test_fraction."""
    val_fraction: Fraction = 0.15
    """Share of the images, in whole patients, in the validation split."""
    test_fraction: Fraction = 0.15
    """Share of the images, in whole patients, in the test split (unused when data.test_csv or
    center_holdout gives the test split)."""
    seed: int = 0
    """Seed of the split: the same seed and data give the same splits.json."""
    holdout_centers: list[str] = field(default_factory=list)
    """Centres (values of data.center_column) that form the test split under center_holdout."""
    n_folds: Annotated[int, Range(">= 2")] = 5
    """Folds of the non-test images under kfold."""
    fold: int = 0
    """The fold (0-based, below n_folds) that is the validation split under kfold."""


@dataclass
class AugmentConfig:
    """Random augmentation of training images, after the caches, every epoch."""

    flip_prob: Probability = 0.5
    """Probability of a flip along each axis in flip_axes (0 = no flips)."""
    flip_axes: list[int] = field(default_factory=lambda: [0])
    """Spatial axes (0-based, below the number of data.spatial_size values) that may flip."""
    affine_prob: Probability = 0.5
    """Probability of a random affine (rotation, scaling, translation) per image."""
    rotate_deg: float = 10.0
    """Largest rotation in degrees (3D: about each axis; 2D: in the plane)."""
    scale: float = 0.1
    """Largest zoom: the scale factor is drawn from [1 - scale, 1 + scale]."""
    translate: float = 0.0
    """Largest shift, as a fraction of data.spatial_size along each axis."""
    intensity_prob: Probability = 0.5
    """Probability of each intensity change (scaling, shift, contrast) per image."""
    intensity_shift: float = 0.05
    """Largest offset added to the [0, 1] intensities (drawn from -shift..shift)."""
    intensity_scale: float = 0.1
    """Largest relative intensity scaling: intensities times 1 + f, f drawn from -scale..scale."""
    noise_std: float = 0.0
    """Largest standard deviation of Gaussian noise added with probability 0.5 (0 = off)."""
    contrast_gamma: Fraction = 0.0
    """Random gamma contrast, gamma drawn from [1 - g, 1 + g] with intensity_prob (0 = off)."""


@dataclass
class PhantomConfig:
    """A built-in synthetic data set, generated into data.image_root on first use."""

    kind: Literal["none", "ct", "xray"] = "none"
    """ct: chest CT volumes, six findings; xray: radiographs of three centres; none: your data."""
    n_patients: Annotated[int, Range(">= 10")] = 300
    """Patients in the generated set (each with one or more images)."""
    seed: int = 0
    """Seed of the generator: the same seed makes the same images."""
    format: Literal["nifti", "dicom"] = "nifti"
    """ct only: nifti (one .nii.gz per scan) or dicom (a folder of slices per scan, as scanners
    export them: an axial series, half the folders with .dcm names, half without)."""


@dataclass
class DataConfig:
    """Where the images and labels are, how they are preprocessed, cached and split."""

    csv: str = ""
    """Labels CSV, one row per image (required; generated with phantom.kind or medmnist_npz)."""
    image_root: str = ""
    """Folder the CSV's image paths are relative to (required)."""
    task: Literal["multilabel", "multiclass", "binary"] = "multilabel"
    """multilabel: a 0/1 column per finding; multiclass: one column of class names or indices;
    binary: one 0/1 column."""
    image_column: str = "image"
    """CSV column holding each image's path, relative to image_root."""
    label_columns: list[str] = field(default_factory=list)
    """CSV label columns (required): one per finding for multilabel, one for the other tasks."""
    class_names: list[str] = field(default_factory=list)
    """Names in output order: multilabel: one per label column (default: the column names);
    multiclass: the classes in index order (required); binary: [negative, positive]."""
    patient_column: str = "patient_id"
    """CSV column of patient ids, so that a patient's images stay in one split ('' for none)."""
    patient_id_regex: str = ""
    """Regex on the image name giving the patient id (group 1, else the whole match) where the
    patient column is blank; no id: each image is its own patient."""
    center_column: str = "center"
    """CSV column naming each image's centre, for center_holdout ('' for none)."""
    series_uid_column: str = ""
    """CSV column of the SeriesInstanceUID to read where the image column names a DICOM folder
    holding several series ('' = each folder holds one series)."""
    split_column: str = "split"
    """CSV column of train / val / test per row, read by split strategies auto and column."""
    find_images: Literal["direct", "recursive"] = "direct"
    """direct: the image column is a path under image_root; recursive: a file name searched for
    anywhere under image_root (nested layouts such as CT-RATE's)."""
    test_csv: str = ""
    """A second labels CSV that is the test split ('' = the test split comes from data.split)."""
    test_image_root: str = ""
    """Folder test_csv's image paths are relative to ('' = image_root)."""
    spacing: Annotated[list[float], Range("positive")] = field(default_factory=list)
    """Voxel spacing in mm that 3D volumes are resampled to ([] keeps the stored spacing; 2D
    images need [])."""
    spatial_size: Annotated[list[int], Range("positive")] = field(
        default_factory=lambda: [64, 64, 48]
    )
    """Voxels (3 values, 3D) or pixels (2 values, 2D) fed to the model."""
    resize_mode: Literal["pad_crop", "resize", "fit"] = "pad_crop"
    """pad_crop: pad or crop to spatial_size at the same scale; resize: stretch to it; fit:
    longest side to size keeping the aspect ratio, then pad."""
    orientation: str = "RAS"
    """Axis codes 3D volumes are turned to before resampling ('' keeps the stored order)."""
    intensity_min: float = -1000.0
    """Intensity mapped to 0 under intensity_mode window (HU for CT); lower values clip."""
    intensity_max: float = 400.0
    """Intensity mapped to 1 under intensity_mode window; above intensity_min."""
    windows: list[list[float] | str] = field(default_factory=list)
    """Intensity windows, one input channel each: [min, max] (HU) or a preset: lung
    [-1000, 400], mediastinum [-160, 240], bone [-500, 1300]; [] = the one window
    intensity_min..intensity_max."""
    intensity_mode: Literal["window", "bit_depth", "percentile"] = "window"
    """Scaling to [0, 1]: window (intensity_min..max), bit_depth (the stored 8-16 bit range),
    percentile (the image's 0.5..99.5 percentiles)."""
    cache: Literal["none", "disk", "ram", "disk+ram"] = "disk+ram"
    """Where preprocessed images are kept between epochs: none, disk (cache_dir), ram, both."""
    cache_dir: str = "outputs/cache"
    """Folder of the disk cache (a subfolder per preprocessing settings) and image-check memo."""
    cache_dtype: Literal["float32", "float16"] = "float32"
    """Dtype of cached images; float16 halves the cache."""
    ram_cache_shard: bool = False
    """Under torchrun, each rank caches only its own fixed shard (needs ram in data.cache)."""
    missing_labels: Literal["error", "ignore"] = "error"
    """A blank label cell (multilabel, binary): error stops the run naming the row; ignore
    leaves that finding of that scan out of the loss and of the finding's metrics."""
    uncertain_labels: Literal["error", "ignore", "positive", "negative"] = "error"
    """A label cell of -1 (uncertain, as in CheXpert): error; ignore (masked out like a blank
    cell); positive (read as 1); negative (read as 0)."""
    on_bad_sample: Literal["error", "skip"] = "error"
    """An unreadable, constant or non-finite image: error stops the run naming it; skip leaves
    it out and names it on stderr."""
    allow_absolute_paths: bool = False
    """Accept absolute image paths outside image_root (relative paths never leave it)."""
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    medmnist_npz: str = ""
    """A MedMNIST .npz imported into image_root (images + labels.csv) on first use; '' = none."""
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """The network, built by name from the model registry."""

    name: str = "resnet3d"
    """Registered model name (an unknown one is an error listing those there are)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The builder's own options, e.g. {depth: 18} (an unknown one lists those it takes)."""
    pretrained: str = ""
    """Weights to start from: '' (random), a run folder (its best.pt) or checkpoint of this
    trainer, a state-dict file (.pt / .pth; 'module.' prefixes dropped), or medicalnet
    (MedicalNet 3D ResNet of model.params.depth via MONAI, downloaded once). Tensors are matched
    by name and shape; a resume keeps its own trained weights."""
    freeze: Literal["none", "backbone"] = "none"
    """backbone: train only the classifier head (a linear probe; needs model.pretrained)."""


@dataclass
class OptimConfig:
    """AdamW and its learning rate schedule."""

    lr: Annotated[float, Range("positive")] = 1e-3
    """Peak learning rate (reached after warm-up)."""
    weight_decay: Annotated[float, Range(">= 0")] = 1e-4
    """AdamW's decoupled weight decay."""
    betas: Annotated[list[float], Range("[0, 1)")] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW's two decay rates of the running mean of the gradient and of its square."""
    scheduler: Literal["cosine", "constant"] = "cosine"
    """cosine: linear warm-up, then cosine decay to min_lr_ratio x lr; constant: lr throughout."""
    warmup_epochs: Annotated[float, Range(">= 0")] = 1.0
    """Epochs of linear warm-up under cosine (may be fractional)."""
    min_lr_ratio: Annotated[float, Range("[0, 1]")] = 0.01
    """Final learning rate under cosine, as a fraction of lr."""
    backbone_lr_scale: Annotated[float, Range("(0, 1]")] = 1.0
    """Learning rate of every layer but the classifier head, as a fraction of lr (e.g. 0.1 for
    a pretrained backbone; needs model.pretrained when below 1)."""
    grad_clip: Annotated[float, Range(">= 0")] = 1.0
    """Largest gradient norm; larger gradients are scaled down to it (0 = no clipping)."""


@dataclass
class TrainConfig:
    """The training loop, early stopping and data loading."""

    epochs: AtLeastOne = 20
    """Most epochs to train (early stopping may end sooner)."""
    batch_size: AtLeastOne = 8
    """Images per batch and process (also the batch of evaluation and inference)."""
    accumulate: AtLeastOne = 1
    """Batches whose gradients are summed into one optimizer step."""
    seed: int = 0
    """Seed of the weights, shuffling and augmentation: the same seed repeats a run."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu, cuda or cuda:N."""
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    """Mixed precision on CUDA: auto (bf16 where supported, else fp16), bf16, fp16, off; the CPU
    always runs float32."""
    num_workers: Annotated[int, Range(">= -1")] = -1
    """DataLoader worker processes; -1 = chosen from the cores available."""
    threads: NonNegative = 0
    """Torch threads of the main process; 0 = the cores the workers leave."""
    pin_memory: bool | Literal["auto"] = "auto"
    """Batches in pinned host memory; auto = on with CUDA."""
    persistent_workers: bool | Literal["auto"] = "auto"
    """Keep evaluation loader workers between epochs; auto = when there are workers."""
    prefetch_factor: NonNegative = 0
    """Batches each worker loads ahead; 0 = PyTorch's 2."""
    pos_weight: bool = False
    """BCE pos_weight = negatives / positives of the training split (multilabel, binary)."""
    class_weights: bool = False
    """Inverse-frequency class weights in the multiclass training loss (validation unweighted)."""
    monitor: str = "val/roc_auc_macro"
    """Logged metric for early stopping and best.pt, e.g. val/roc_auc_macro or val/loss."""
    monitor_mode: Literal["max", "min"] = "max"
    """max: a higher monitor is better; min: a lower one."""
    patience: AtLeastOne = 10
    """Epochs without improvement of monitor before training stops."""
    min_delta: Annotated[float, Range(">= 0")] = 0.0
    """Smallest change of monitor that counts as an improvement."""
    eval_test: bool = True
    """The end-of-run evaluation reads the test split (false: the validation split only)."""
    watch_classes: list[str] = field(default_factory=list)
    """Classes whose validation recall of 0 in two epochs running prints a warning."""
    sync_batchnorm: bool = False
    """Under torchrun on GPUs, BatchNorm statistics over all ranks (SyncBatchNorm)."""
    max_nonfinite_steps: AtLeastOne = 5
    """Steps in a row with a NaN or infinite loss or gradient (each skipped) that stop the run."""


@dataclass
class CheckpointConfig:
    """Which checkpoints are kept besides last.pt and final.pt."""

    save_best: bool = True
    """Write best.pt whenever train.monitor improves."""
    keep_last_n: NonNegative = 0
    """Keep epoch_NNNN.pt copies of the last N epochs beside last.pt (0 = none)."""


@dataclass
class WandbConfig:
    """Weights & Biases tracking (metrics.csv in the run folder holds every epoch regardless)."""

    mode: Literal["auto", "offline", "online", "disabled"] = "auto"
    """auto: online when W&B credentials exist and the server answers within init_timeout, else
    offline; offline: files in the run folder (wandb sync uploads them); online; disabled. The
    environment variable WANDB_MODE wins over this key."""
    project: str = "radiology-classifier"
    """W&B project of the run."""
    entity: str = ""
    """W&B team or user ('' = your default)."""
    tags: list[str] = field(default_factory=list)
    """Tags of the W&B run."""
    group: str = ""
    """W&B group of the run ('' = none); the folds of --folds / --fold share their group's name."""
    init_timeout: Annotated[float, Range("positive")] = 60.0
    """Seconds W&B may take to start before tracking falls back (online, offline, off)."""


@dataclass
class LoggingConfig:
    """The run folder, console output and tracking."""

    output_dir: str = "outputs"
    """Folder that holds the run folders."""
    run_name: str = ""
    """Run folder name ('' = the config's name, date and time); an explicit split strategy
    adds its tag."""
    progress: bool | Literal["auto"] = "auto"
    """Progress bars: true, false, or auto (only when stderr is a terminal, not into a log)."""
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class EvaluationConfig:
    """After training: decision thresholds, bootstrap CIs, the report's Grad-CAM gallery."""

    threshold_rule: Literal["youden", "fixed"] = "youden"
    """Per-class threshold chosen on validation: youden (Youden's J) or fixed (0.5); multiclass
    decides by arg-max."""
    sensitivity_targets: dict[str, float] = field(default_factory=dict)
    """Class -> target sensitivity in (0, 1]: the highest threshold reaching it on validation."""
    bootstrap: NonNegative = 1000
    """Bootstrap replicates, resampled by patient, for confidence intervals (0 = none)."""
    confidence: Annotated[float, Range("(0, 1)")] = 0.95
    """Level of the bootstrap confidence intervals."""
    seed: int = 0
    """Seed of the bootstrap resampling."""
    gradcam_per_group: NonNegative = 2
    """Grad-CAM scans per (finding, TP / FP / FN) in the report's gallery (0 = none)."""
    gradcam_method: Literal["gradcam", "gradcam++", "guided"] = "guided"
    """guided: the finest stage's Grad-CAM times the smoothed positive input gradient;
    gradcam and gradcam++: MONAI's."""
    gradcam_layer: str = ""
    """CNN module the maps are taken from ('' = the model's automatic choice)."""
    gradcam_shift_average: bool = True
    """Average CNN maps over the input shifted by half the map's stride along each axis."""
    report: bool = True
    """After training, evaluate the best checkpoint (eval-<split>/) and write report.html / .md."""


@dataclass
class Config:
    """A training run's settings: one YAML file with the sections below."""

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
    def windows(self) -> list[tuple[float, float]]:
        """data.windows as (min, max) pairs, presets resolved; [] when not set."""
        return [
            WINDOW_PRESETS[w] if isinstance(w, str) else (float(w[0]), float(w[1]))
            for w in self.data.windows
        ]

    @property
    def in_channels(self) -> int:
        """Input channels of the model: one per intensity window (one without data.windows)."""
        return max(1, len(self.data.windows))

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
