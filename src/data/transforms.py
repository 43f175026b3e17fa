"""The two transform builders: fixed preprocessing (cached) and random augmentation (every epoch).

``build_preprocessing`` turns a file path into a fixed-size tensor and is deterministic, so
its output can be cached on disk or in RAM. ``build_augmentation`` runs after the caches and
draws new random numbers each epoch. ``preprocessing_key`` hashes every setting that changes
the preprocessing output; the disk cache lives in a folder named by it, so a changed
transform never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)

from src.config import Config
from src.data.dicom import LoadImageOrSeriesd
from src.data.radiograph import GreyChanneld, ScaleBitDepthd

# Bump when the preprocessing code changes in a way the settings below do not capture.
PREPROCESSING_VERSION = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # NIfTI world axes


def preprocessing_settings(cfg: Config) -> dict[str, Any]:
    """Every setting that the output of ``build_preprocessing`` depends on."""
    d = cfg.data
    windows = {"windows": [list(w) for w in cfg.windows]} if d.windows else {}
    return windows | {
        "version": PREPROCESSING_VERSION,
        "spatial_size": list(d.spatial_size),
        "spacing": list(d.spacing),
        "resize_mode": d.resize_mode,
        "orientation": d.orientation,
        "intensity": [d.intensity_min, d.intensity_max],
        "intensity_mode": d.intensity_mode,
        "dtype": d.cache_dtype,
    }


def preprocessing_key(cfg: Config) -> str:
    """A short hash of ``preprocessing_settings``: the disk cache folder's name."""
    text = json.dumps(preprocessing_settings(cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_preprocessing(cfg: Config) -> Compose:
    """Deterministic: load, channel-first, orient, resample, window and scale, fix the shape.

    3D: NIfTI files, or a folder of one DICOM series (``src.data.dicom``), in HU; with
    ``data.windows`` one channel per window. 2D (radiographs: PNG/JPEG through PIL, DICOM
    through pydicom): no orientation; the stored dtype is kept until the intensity scaling,
    then one grey channel is made of the file's channels, whatever they were.
    """
    d = cfg.data
    two_d = cfg.spatial_dims == 2
    load = LoadImageOrSeriesd(
        keys="image",
        ensure_channel_first=True,
        image_only=True,
        dtype=None if two_d else np.float32,
    )
    steps: list = [load]
    if not two_d and d.orientation:
        steps.append(Orientationd(keys="image", axcodes=d.orientation, labels=_RAS_LABELS))
    if d.spacing:
        steps.append(Spacingd(keys="image", pixdim=d.spacing, mode="bilinear"))
    scale = _intensity_scaling(cfg)
    if two_d:  # bit-depth scaling needs the stored dtype, the others a float grey channel
        grey = GreyChanneld(keys="image")
        steps += [scale, grey] if d.intensity_mode == "bit_depth" else [grey, scale]
    else:
        steps.append(scale)
    if d.resize_mode == "resize":
        steps.append(Resized(keys="image", spatial_size=d.spatial_size, mode="area"))
    elif d.resize_mode == "fit":  # longest side to size, keeping the aspect ratio; then pad
        longest = max(d.spatial_size)
        steps.append(Resized(keys="image", spatial_size=longest, size_mode="longest", mode="area"))
        steps.append(ResizeWithPadOrCropd(keys="image", spatial_size=d.spatial_size))
    else:
        steps.append(ResizeWithPadOrCropd(keys="image", spatial_size=d.spatial_size))
    # Plain tensors (no metadata) keep the caches small; compact dtype on request.
    steps.append(EnsureTyped(keys="image", dtype=_DTYPES[d.cache_dtype], track_meta=False))
    return Compose(steps)


class WindowChannelsd(MapTransform):
    """One channel per intensity window: MONAI's ``ScaleIntensityRange`` of each window
    [min, max] to [0, 1] (clipped), the channels stacked in window order."""

    def __init__(self, keys: KeysCollection, windows: Sequence[tuple[float, float]]):
        super().__init__(keys)
        self.scalings = [
            ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
            for lo, hi in windows
        ]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.cat([scale(d[key]) for scale in self.scalings], dim=0)
        return d


def _intensity_scaling(cfg: Config):
    """``data.intensity_mode``: fixed window(s), the stored bit depth, or per-image percentiles."""
    d = cfg.data
    if d.windows:
        return WindowChannelsd(keys="image", windows=cfg.windows)
    if d.intensity_mode == "bit_depth":
        return ScaleBitDepthd(keys="image")
    if d.intensity_mode == "percentile":
        return ScaleIntensityRangePercentilesd(
            keys="image", lower=0.5, upper=99.5, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32
        )
    return ScaleIntensityRanged(
        keys="image", a_min=d.intensity_min, a_max=d.intensity_max, b_min=0.0, b_max=1.0, clip=True
    )


def build_augmentation(cfg: Config, train: bool = True) -> Compose:
    """Random augmentation after the caches (train), or only the float32 cast (evaluation)."""
    steps: list = [CastToTyped(keys="image", dtype=torch.float32)]
    if not train:
        return Compose(steps)
    a, nd = cfg.data.augment, cfg.spatial_dims
    if a.flip_prob > 0:
        steps += [RandFlipd(keys="image", prob=a.flip_prob, spatial_axis=ax) for ax in a.flip_axes]
    if a.affine_prob > 0 and (a.rotate_deg > 0 or a.scale > 0 or a.translate > 0):
        rot = math.radians(a.rotate_deg)
        steps.append(
            RandAffined(
                keys="image",
                prob=a.affine_prob,
                rotate_range=[rot] * (3 if nd == 3 else 1),
                scale_range=[a.scale] * nd,
                translate_range=[a.translate * s for s in cfg.data.spatial_size],
                padding_mode="zeros",
            )
        )
    if a.intensity_prob > 0:
        if a.intensity_scale > 0:
            steps.append(
                RandScaleIntensityd(keys="image", factors=a.intensity_scale, prob=a.intensity_prob)
            )
        if a.intensity_shift > 0:
            steps.append(
                RandShiftIntensityd(keys="image", offsets=a.intensity_shift, prob=a.intensity_prob)
            )
    if a.contrast_gamma > 0:  # exposure/contrast differences between centres
        gamma = (1 - a.contrast_gamma, 1 + a.contrast_gamma)
        steps.append(RandAdjustContrastd(keys="image", prob=a.intensity_prob, gamma=gamma))
    if a.noise_std > 0:
        steps.append(RandGaussianNoised(keys="image", prob=0.5, std=a.noise_std))
    return Compose(steps)
