"""The planning rules: from a fingerprint (``src.plan.fingerprint``) to a training config.

Every rule is general (none names a data set) and is written beside the key it sets in the
written YAML. The rules, in the order they are applied:

1. Dimensions: 3D when the median image has three axes of more than one voxel, else 2D.
2. Spacing (3D): the median spacing per axis (RAS order). When the data set is anisotropic (the
   coarsest median axis at least 3x the finest, nnU-Net's threshold) the coarse axis keeps a
   coarse target, its 10th percentile, rather than being resampled to the fine in-plane spacing
   (nnU-Net's rule). When every image has the same spacing, none is resampled (``[]``).
3. Input size: the median field of view at the target spacing (3D) or the median image size
   (2D), rounded up to a multiple of 4. It is capped by a compute budget of the device
   (``MAX_VOXELS``): a 3D volume over it keeps its field of view and the spacing is coarsened
   (a crop would cut anatomy off); a 2D image over it is shrunk keeping its aspect ratio
   (``fit``). 3D inputs and 2D images of one size keep the millimetre / pixel scale
   (``pad_crop``); 2D images of several sizes are fitted (``fit``).
4. Intensity: CT (3D with air near -1000 HU) -> a HU window from the 0.5th to the 99.5th
   percentile of the sampled voxels (rounded to 10 HU, within -1024..3071); other volumes -> the
   same percentiles in the stored units (the sample's min..max when they coincide, as in masks);
   2D images stored as integers -> their bit depth; 2D floats -> per-image percentiles.
5. Model: ResNet (2D or 3D) with widths 16-128 trained from scratch; depth 10 under
   ``SMALL_SET`` training images, else 18. The stem downsamples by the largest of 1, 2, 4 that
   leaves at least ``STEM_MIN`` voxels per axis (14 = MedMNIST's 28 after a stride-2 stem).
6. Batch: the effective batch is the largest power of two up to ``n_train / 32`` (an epoch of
   at least 32 optimizer steps), within 8..64. The per-step batch is the largest power of two
   up to it whose measured training step (``src.plan.budget``) fits half the memory budget;
   ``accumulate`` makes up the rest. The learning rate follows the effective batch by
   square-root scaling: 2e-3 at 32 (AdamW), within 3e-4..4e-3.
7. Schedule: ``TARGET_STEPS`` optimizer steps in all: epochs = target / steps per epoch, within
   10..100; patience a third of the epochs (at least 5); warm-up 5 % of the steps.
8. Imbalance: the task's loss weights (BCE ``pos_weight`` / inverse-frequency class weights, the
   task names the key) when a class holds under ``WEIGHT_BELOW`` of the images; classes under
   ``WATCH_BELOW`` are watched for a collapse of their validation recall.
9. Split: a split column with values in the CSV (an official split) is kept; otherwise a seeded
   split grouped by patient and stratified by label (15 % validation, 15 % test), with the
   smallest centre named for ``center_holdout`` when there are several centres.
10. Cache: ``ram`` when the preprocessed images (float32, else float16) fit half the memory
    budget, else ``disk`` in float16.
11. Augmentation: no flips (anatomy has a left and a right), small affine (10 degrees, 10 %
    scale) and intensity changes (5 % shift, 10 % scale), each with probability 0.5.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from src.config import ConfigError
from src.plan.budget import GIB, StepCost, measure_step
from src.training.tasks import Task

MAX_VOXELS = {("cpu", 2): 128**2, ("cpu", 3): 64**3, ("cuda", 2): 512**2, ("cuda", 3): 160**3}
ANISOTROPY = 3.0
SMALL_SET = 2000
STEM_MIN = 14
TARGET_STEPS = 1000
WEIGHT_BELOW = 0.20
WATCH_BELOW = 0.10
VAL_FRACTION = TEST_FRACTION = 0.15

Plan = dict[str, tuple[Any, str]]  # dotted key -> (value, the rule that set it)


def _round_up(n: float, multiple: int = 4) -> int:
    return max(multiple, int(math.ceil(n / multiple) * multiple))


def _pow2_at_most(n: float) -> int:
    return 2 ** math.floor(math.log2(max(n, 1)))


def plan_geometry(fp: dict[str, Any], device: str) -> Plan:
    """Rules 1-3: spacing, ``spatial_size`` and ``resize_mode``."""
    cap = MAX_VOXELS[(device, fp["dims"])]
    if fp["dims"] == 3:
        spacing = np.array(fp["spacing"]["median"], float)
        fov = np.array(fp["field_of_view_mm"]["median"], float)
        note = "median spacing per axis (mm, RAS)"
        if spacing.max() >= ANISOTROPY * spacing.min():
            coarse = int(spacing.argmax())
            spacing[coarse] = fp["spacing"]["p10"][coarse]
            note = (
                f"anisotropic (axis {coarse} >= {ANISOTROPY:g}x the finest): that axis kept "
                "coarse at its 10th percentile, the others at their median (nnU-Net)"
            )
        size = np.ceil(fov / spacing)
        if np.prod(size) > cap:
            factor = (np.prod(size) / cap) ** (1 / 3)
            spacing = spacing * factor
            size = np.ceil(fov / spacing)
            note += f"; coarsened x{factor:.2f} to keep the median field of view under {cap} voxels"
        keep = fp["distinct_spacings"] == 1 and "coarsened" not in note
        size = [_round_up(s) for s in size]
        mm = "x".join(f"{v:.0f}" for v in fov)
        return {
            "data.spacing": ([] if keep else [round(float(s), 3) for s in spacing],
                             "one spacing in the whole set: not resampled" if keep else note),
            "data.spatial_size": (size, f"covers the median field of view, {mm} mm"),
            "data.resize_mode": ("pad_crop", "pad / crop around the centre, keeps the mm scale"),
        }  # fmt: skip
    shape = np.array(fp["shape"]["median"], float)
    fitted = fp["distinct_shapes"] > 1
    note = "the median image size (width, height)"
    if np.prod(shape) > cap:
        shape = shape * math.sqrt(cap / np.prod(shape))
        fitted = True
        note += f", shrunk keeping the aspect ratio to under {cap} pixels"
    mode = "fit" if fitted else "pad_crop"
    why = "sizes differ: longest side to size, then pad" if fitted else "one size: native pixels"
    return {
        "data.spacing": ([], "2D: pixels as stored"),
        "data.spatial_size": ([_round_up(s) for s in shape], note),
        "data.resize_mode": (mode, why),
    }


def plan_intensity(fp: dict[str, Any]) -> Plan:
    """Rule 4: the scaling to [0, 1]."""
    i, modality = fp["intensity"], fp["modality"]
    if modality in ("radiograph", "image"):
        mode = "bit_depth" if modality == "radiograph" else "percentile"
        why = (
            "2D, stored as integers: the stored bit depth to [0, 1]"
            if mode == "bit_depth"
            else "2D floats: per-image 0.5-99.5 percentiles to [0, 1]"
        )
        return {"data.intensity_mode": (mode, why)}
    lo, hi = i["p0_5"], i["p99_5"]
    where = "0.5th..99.5th percentile of the sampled voxels"
    if modality == "ct":
        lo, hi = max(-1024.0, round(lo, -1)), min(3071.0, round(hi, -1))
        where = f"CT (air near -1000 HU): HU window, {where}"
    elif hi <= lo:
        lo, hi = i["min"], i["max"]
        where = "min..max of the sampled voxels (the percentiles coincide: a mask-like set)"
    return {
        "data.intensity_mode": ("window", where),
        "data.intensity_min": (float(lo), where),
        "data.intensity_max": (float(hi), where),
    }


def plan_model(fp: dict[str, Any], size: list[int], n_train: int) -> Plan:
    """Rule 5: network, depth and stem."""
    dims = len(size)
    depth = 10 if n_train < SMALL_SET else 18
    down = max(d for d in (1, 2, 4) if min(size) / d >= STEM_MIN or d == 1)
    stem = {1: (1, True), 2: (2, True), 4: (2, False)}[down]
    params = {
        "depth": depth,
        "widths": [16, 32, 64, 128],
        "conv1_kernel": 3,
        "conv1_stride": stem[0],
        "no_max_pool": stem[1],
    }
    why = (
        f"depth {depth} ({n_train} training images {'<' if depth == 10 else '>='} {SMALL_SET}); "
        f"stem downsamples x{down}: >= {STEM_MIN} voxels per axis after it"
    )
    return {
        "model.name": (f"resnet{dims}d", "ResNet from scratch, no weights to download"),
        "model.params": (params, why),
    }


def plan_batch(
    plan: Plan, n_outputs: int, n_train: int, memory_gb: float, device: str
) -> tuple[Plan, StepCost]:
    """Rule 6: batch, accumulation and learning rate from a measured training step."""
    size = plan["data.spatial_size"][0]
    name, params = plan["model.name"][0], plan["model.params"][0]
    effective = int(min(64, max(8, _pow2_at_most(n_train / 32))))
    cost = measure_step(name, params, size, n_outputs, 2, device)
    budget = memory_gb * GIB / 2
    batch = effective
    while batch > 2 and cost.bytes_at(batch) > budget:
        batch //= 2
    if cost.bytes_at(batch) > budget:
        raise ConfigError(
            f"--memory-gb: a training step of {name} at {size} needs "
            f"{cost.bytes_at(batch) / GIB:.1f} GiB at batch {batch}, over half of "
            f"{memory_gb:g} GiB; give more memory or a smaller input"
        )
    accumulate = math.ceil(effective / batch)
    lr = float(f"{min(4e-3, max(3e-4, 2e-3 * math.sqrt(effective / 32))):.2g}")
    step_gb = cost.bytes_at(batch) / GIB
    return {
        "train.batch_size": (
            batch,
            f"step measured on {device}: {step_gb:.2f} GiB at this batch, budget "
            f"{budget / GIB:.1f} GiB (half of --memory-gb)",
        ),
        "train.accumulate": (
            accumulate,
            f"effective batch {effective}: a power of two <= n_train / 32, in 8..64",
        ),
        "optim.lr": (lr, f"2e-3 x sqrt({effective} / 32), in 3e-4..4e-3"),
    }, cost


def plan_schedule(n_train: int, batch: int, accumulate: int) -> Plan:
    """Rule 7: epochs, patience and warm-up from a target number of optimizer steps."""
    steps = max(1, math.ceil(n_train / batch / accumulate))
    epochs = int(min(100, max(10, math.ceil(TARGET_STEPS / steps))))
    patience = max(5, math.ceil(epochs / 3))
    warm = round(max(0.05 * epochs, 1 / steps), 2)
    return {
        "train.epochs": (
            epochs,
            f"{TARGET_STEPS} optimizer steps / {steps} a epoch ({n_train} training images), in "
            "10..100",
        ),
        "train.patience": (patience, "a third of the epochs, at least 5"),
        "optim.warmup_epochs": (warm, "5 % of the steps"),
    }


def plan_imbalance(fp: dict[str, Any], task: Task, labels: np.ndarray) -> Plan:
    """Rule 8: loss weights and the watch list, as the task names them."""
    shares = task.class_shares(labels)
    rarest = min(shares, key=shares.get)
    weigh = shares[rarest] < WEIGHT_BELOW
    watch = [n for n, s in shares.items() if s < WATCH_BELOW]
    return {
        f"train.{task.loss_weight_key}": (
            weigh,
            f"rarest class {rarest!r} {shares[rarest]:.1%} of the images "
            f"{'<' if weigh else '>='} {WEIGHT_BELOW:.0%}",
        ),
        "train.watch_classes": (watch, f"classes under {WATCH_BELOW:.0%} of the images"),
    }


def plan_split(fp: dict[str, Any]) -> Plan:
    """Rule 9: the CSV's split column, else a patient-grouped stratified split."""
    g = fp["groups"]
    if g["split_column"]:
        counts = ", ".join(f"{k} {v}" for k, v in g["split_column"].items())
        return {"data.split.strategy": ("column", f"the CSV's own split is kept ({counts})")}
    out: Plan = {
        "data.split.strategy": (
            "stratified",
            f"grouped by patient ({g['patients']} patients), stratified by label",
        ),
        "data.split.val_fraction": (VAL_FRACTION, "share of the patients"),
        "data.split.test_fraction": (TEST_FRACTION, "share of the patients"),
        "data.split.seed": (0, "the same seed and data give the same splits.json"),
    }
    if len(g["centres"]) > 1:
        smallest = min(g["centres"], key=g["centres"].get)
        out["data.split.holdout_centers"] = (
            [smallest],
            f"{len(g['centres'])} centres: --set data.split.strategy=center_holdout tests on "
            "this one, unseen in training",
        )
    return out


def plan_cache(fp: dict[str, Any], size: list[int], memory_gb: float) -> Plan:
    """Rule 10: RAM when the preprocessed set fits half the budget, else disk."""
    voxels = fp["images"] * math.prod(size)
    budget = memory_gb * GIB / 2
    for dtype, nbytes in (("float32", 4), ("float16", 2)):
        if voxels * nbytes <= budget:
            gb = voxels * nbytes / GIB
            why = f"{gb:.2f} GiB preprocessed ({dtype}) <= {budget / GIB:.1f} GiB"
            return {"data.cache": ("ram", why), "data.cache_dtype": (dtype, why)}
    gb = voxels * 2 / GIB
    why = f"{gb:.1f} GiB preprocessed (float16) > {budget / GIB:.1f} GiB: cached on disk"
    return {"data.cache": ("disk", why), "data.cache_dtype": ("float16", why)}


def plan_augmentation(dims: int) -> Plan:
    """Rule 11: the same mild augmentation for every set."""
    return {
        "data.augment.flip_prob": (0.0, "no flips: anatomy has a left and a right"),
        "data.augment.affine_prob": (0.5, "small rotations and zooms"),
        "data.augment.rotate_deg": (10.0, ""),
        "data.augment.scale": (0.1, ""),
        "data.augment.intensity_prob": (0.5, "exposure / scanner differences"),
        "data.augment.intensity_shift": (0.05, ""),
        "data.augment.intensity_scale": (0.1, ""),
    }


def training_images(fp: dict[str, Any]) -> int:
    """Images in the training split: the split column's train rows, else 70 % of the set."""
    split = fp["groups"]["split_column"]
    if split:
        return int(sum(v for k, v in split.items() if k.startswith("train")))
    return round(fp["images"] * (1 - VAL_FRACTION - TEST_FRACTION))


def make_plan(
    fp: dict[str, Any],
    task: Task,
    labels: np.ndarray,
    memory_gb: float,
    device: str = "cpu",
) -> tuple[Plan, StepCost]:
    """Every rule applied to the fingerprint ``fp``; returns the plan (dotted key -> value and
    its rule) and the measured training step."""
    kind = "cuda" if device.startswith("cuda") else "cpu"
    n_train = training_images(fp)
    plan = plan_geometry(fp, kind)
    plan |= plan_intensity(fp)
    plan |= plan_model(fp, plan["data.spatial_size"][0], n_train)
    batch, cost = plan_batch(plan, task.num_outputs, n_train, memory_gb, device)
    plan |= batch
    plan |= plan_schedule(n_train, plan["train.batch_size"][0], plan["train.accumulate"][0])
    plan |= plan_imbalance(fp, task, labels)
    plan |= plan_split(fp)
    plan |= plan_cache(fp, plan["data.spatial_size"][0], memory_gb)
    plan |= plan_augmentation(fp["dims"])
    return plan, cost
