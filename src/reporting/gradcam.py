"""Class activation maps for the registered models, and where the phantom planted its findings.

CNNs (ResNet, DenseNet, EfficientNet, 2D and 3D) use MONAI's ``GradCAM`` / ``GradCAMpp`` on
their last convolutional stage fine enough to localise, or ``guided``: that Grad-CAM map times
the box-smoothed positive part of the input gradient (the idea of Guided Grad-CAM, Selvaraju et
al. 2017, with the plain input gradient in place of guided back-propagation). The coarse map
says which region, the gradient says which voxels in it: the positive part keeps the voxels
whose brightening raises the logit, the finding's side of an edge for a dense finding on lung.
Every CNN map is averaged over the input shifted by half the map's stride along each axis
(``shift_averaged``): a strided map samples the image on a grid, and where a small finding
falls between grid points decides its peak; the shifted copies fill that grid in. On the
phantom CT the peak falls inside the planted finding for about three quarters of the true
positives (``docs/RESULTS.md``).
The ViT has no feature map, so it gets Grad-CAM on the tokens
entering its last transformer block: each patch token's activations weighted by the mean gradient,
laid back on the patch grid and upsampled (not attention rollout).

The phantom's ``regions.json`` gives each finding's box in world RAS millimetres; the affine of
the preprocessed image (orientation, resampling and pad/crop applied) maps it into the voxels
the model saw, so a map's peak can be checked against it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, EnsureTyped
from monai.visualize import GradCAM, GradCAMpp
from torch import nn

from src.config import Config
from src.data.transforms import build_preprocessing
from src.models import ModelError

# Candidate layers, deepest first: the deepest whose map has MIN_CAM_CELLS cells along every
# axis is used (a 64x64x48 CT at stride 32 leaves ResNet's layer4 a 2x2x2 grid: no locality).
CAM_LAYERS = {
    "resnet3d": ["layer4", "layer3", "layer2", "layer1"],
    "resnet2d": ["layer4", "layer3", "layer2", "layer1"],
    "densenet3d": [
        "class_layers.relu",
        "features.denseblock3",
        "features.denseblock2",
        "features.denseblock1",
    ],
    "densenet2d": [
        "class_layers.relu",
        "features.denseblock3",
        "features.denseblock2",
        "features.denseblock1",
    ],
    "efficientnet2d": ["_swish"],
}
MIN_CAM_CELLS = 4
CAM_METHODS = ("gradcam", "gradcam++", "guided")
SALIENCY_SMOOTHING = 3  # voxels: box filter over the positive input gradient (``guided``)


class ViTTokenGradCAM:
    """Grad-CAM on the patch tokens entering a ``ViTClassifier``'s last block."""

    def __init__(self, model: nn.Module, image_size: list[int], patch_size: int):
        self.model = model
        self.grid = [s // patch_size for s in image_size]
        self.image_size = list(image_size)

    def __call__(self, x: torch.Tensor, class_idx: int) -> torch.Tensor:
        store: dict[str, torch.Tensor] = {}

        def keep(_module, _inputs, output):
            output.retain_grad()
            store["tokens"] = output

        # the last block's input: after it only the class token reaches the head
        handle = self.model.vit.blocks[-1].norm1.register_forward_hook(keep)
        try:
            self.model.zero_grad(set_to_none=True)
            self.model(x)[:, class_idx].sum().backward()
        finally:
            handle.remove()
        tokens = store["tokens"]
        act, grad = tokens[:, 1:].detach(), tokens.grad[:, 1:]  # drop the class token
        cam = F.relu((act * grad.mean(1, keepdim=True)).sum(-1))
        cam = cam.reshape(len(x), 1, *self.grid)
        mode = "trilinear" if len(self.grid) == 3 else "bilinear"
        return unit_range(F.interpolate(cam, size=self.image_size, mode=mode, align_corners=False))


def unit_range(cam: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1], highest activation 1. (MONAI's default normaliser maps the
    maximum to 0, for display; a peak search needs the maximum kept on top.)"""
    flat = cam.detach().reshape(len(cam), -1)
    lo, hi = flat.min(1)[0], flat.max(1)[0]
    shape = (-1,) + (1,) * (cam.dim() - 1)
    return (cam.detach() - lo.view(shape)) / (hi - lo).clamp_min(1e-8).view(shape)


@torch.no_grad()
def feature_shapes(
    model: nn.Module, names: list[str], size: list[int], channels: int = 1
) -> dict[str, tuple]:
    """Spatial output shape of each named module for one input of ``size`` (``channels``)."""
    modules, shapes, handles = dict(model.named_modules()), {}, []
    for name in names:
        hook = (lambda n: lambda _m, _i, out: shapes.__setitem__(n, tuple(out.shape[2:])))(name)
        handles.append(modules[name].register_forward_hook(hook))
    try:
        model(torch.zeros(1, channels, *size, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return shapes


def cam_layer(model: nn.Module, cfg: Config, finest: bool = False) -> str:
    """The deepest candidate layer of ``cfg.model.name`` with a map fine enough to localise,
    or with ``finest`` the shallowest candidate (``guided``: the gradient adds the detail, the
    map only has to be local)."""
    names = CAM_LAYERS.get(cfg.model.name)
    if not names:
        raise ModelError(f"model.name: no Grad-CAM layer known for {cfg.model.name!r}")
    if finest:
        return names[-1]
    shapes = feature_shapes(model, names, cfg.data.spatial_size, cfg.in_channels)
    return next((n for n in names if min(shapes[n]) >= MIN_CAM_CELLS), names[-1])


@torch.enable_grad()
def receptive_field_offsets(
    model: nn.Module, layer: str, size: list[int], channels: int = 1
) -> tuple[float, ...]:
    """Per axis, the input voxel at the centre of cell 0 of ``layer``'s map.

    Measured, not assumed: the centroid of |d(cell)^2 / d input| for the middle cell of the
    map (seeded random input in [0, 1], the preprocessed range), minus that cell's index times
    the stride. A stride-2 3x3 conv with padding 1 centres cell j on voxel 2j, not on 2j + 0.5
    as plain interpolation assumes; through a stride-4 stem that puts an upsampled map 1.5
    voxels off (tested).
    """
    module = dict(model.named_modules())[layer]
    param = next(model.parameters())
    out: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _i, y: out.__setitem__("y", y))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, channels, *size, generator=gen).to(param.device).requires_grad_(True)
    try:
        model(x)
    finally:
        handle.remove()
    grid = out["y"].shape[2:]
    middle = tuple(g // 2 for g in grid)
    out["y"][(0, slice(None), *middle)].pow(2).sum().backward()
    weight = x.grad.detach().abs()[0].sum(0).double()  # over the channels (windows)
    model.zero_grad(set_to_none=True)
    offsets = []
    for axis, (n, g) in enumerate(zip(size, grid, strict=True)):
        profile = weight.sum(dim=tuple(a for a in range(len(size)) if a != axis))
        centroid = float((profile * torch.arange(n, dtype=torch.float64)).sum() / profile.sum())
        offsets.append(centroid - middle[axis] * n / g)
    return tuple(offsets)


def aligned_upsampler(offsets: tuple[float, ...]):
    """A MONAI CAM ``upsampler`` that puts cell j of a map at input voxel ``stride * j +
    offset`` (see ``receptive_field_offsets``), linear in between, edge values outside."""

    def make(spatial_size):
        def up(cam: torch.Tensor) -> torch.Tensor:
            axes = []
            for n, g, c in zip(spatial_size, cam.shape[2:], offsets, strict=True):
                u = ((torch.arange(n, dtype=torch.float32) - c) * g / n).clamp(0, g - 1)
                axes.append(2 * u / max(g - 1, 1) - 1)
            mesh = torch.meshgrid(*axes, indexing="ij")
            grid = torch.stack(mesh[::-1], dim=-1).to(cam)  # grid_sample: last axis first
            grid = grid.expand(cam.shape[0], *grid.shape)
            return F.grid_sample(cam, grid, mode="bilinear", align_corners=True)

        return up

    return make


def input_saliency(model: nn.Module, x: torch.Tensor, class_idx: int, smooth: int) -> torch.Tensor:
    """max(d logit / d input, 0) summed over the channels (windows), box-smoothed over
    ``smooth`` voxels (odd), (B, 1, *spatial)."""
    x = x.detach().clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model(x)[:, class_idx].sum().backward()
    grad = x.grad.detach().clamp_min(0).sum(1, keepdim=True)
    pool = F.avg_pool3d if grad.dim() == 5 else F.avg_pool2d
    return pool(grad, smooth, 1, smooth // 2, count_include_pad=False) if smooth > 1 else grad


def shift(x: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """``x`` (B, C, *spatial) moved by ``offsets`` voxels per spatial axis, edges replicated."""
    pad = [p for n in reversed(offsets) for p in (max(n, 0), max(-n, 0))]  # last axis first
    padded = F.pad(x, pad, mode="replicate")
    sizes = x.shape[2:]
    crop = [slice(max(-n, 0), max(-n, 0) + m) for n, m in zip(offsets, sizes, strict=True)]
    return padded[(..., *crop)]


def shift_averaged(cam_fn, strides: tuple[int, ...]):
    """``cam_fn`` averaged over the input shifted by 0 and half of ``strides`` along every axis
    (each map shifted back before averaging): 2^dims maps, or one where every stride is 1."""
    steps = [[0, s // 2] if s > 1 else [0] for s in strides]
    combos = list(itertools.product(*steps))

    def averaged(x: torch.Tensor, class_idx: int) -> torch.Tensor:
        total = None
        for offsets in combos:
            moved = shift(x.detach(), offsets).requires_grad_(x.requires_grad)
            cam = shift(cam_fn(moved, class_idx), tuple(-o for o in offsets))
            total = cam if total is None else total + cam
        return unit_range(total)

    return averaged


def build_cam(model: nn.Module, cfg: Config, method: str = "", layer: str = ""):
    """``(cam, description)``: ``cam(x, class_idx) -> (B, 1, *spatial)`` in [0, 1] for
    ``cfg.model.name``; ``method`` one of ``CAM_METHODS``; ``layer`` names a module instead of
    the automatic choice (CNNs). Empty: the run's ``evaluation.gradcam_method`` / ``_layer``."""
    method = method or cfg.evaluation.gradcam_method
    layer = layer or cfg.evaluation.gradcam_layer
    if method not in CAM_METHODS:
        raise ModelError(f"evaluation.gradcam_method: {method!r} is not one of {CAM_METHODS}")
    if cfg.model.name == "vit3d":
        patch = cfg.model.params.get("patch_size", 16)
        text = "Grad-CAM on the patch tokens entering the ViT's last block (not attention)"
        return ViTTokenGradCAM(model, cfg.data.spatial_size, patch), text
    layer = layer or cam_layer(model, cfg, finest=method == "guided")
    cls = GradCAMpp if method == "gradcam++" else GradCAM
    offsets = receptive_field_offsets(model, layer, cfg.data.spatial_size, cfg.in_channels)
    up = aligned_upsampler(offsets)
    cam = cls(nn_module=model, target_layers=layer, upsampler=up, postprocessing=unit_range)
    name = "Grad-CAM++" if method == "gradcam++" else "Grad-CAM"
    text = f"MONAI {name} on layer `{layer}`"
    if method == "guided":
        k = SALIENCY_SMOOTHING

        def one(x: torch.Tensor, class_idx: int) -> torch.Tensor:
            coarse = cam(x, class_idx=class_idx)
            return unit_range(coarse * input_saliency(model, x, class_idx, k))

        text += f" x positive input gradient smoothed over {k} voxels (guided Grad-CAM)"
    else:

        def one(x: torch.Tensor, class_idx: int) -> torch.Tensor:
            return cam(x, class_idx=class_idx)

    if not cfg.evaluation.gradcam_shift_average:
        return one, text
    size = cfg.data.spatial_size
    grid = feature_shapes(model, [layer], size, cfg.in_channels)[layer]
    strides = tuple(max(1, round(n / g)) for n, g in zip(size, grid, strict=True))
    n_maps = 2 ** sum(s > 1 for s in strides)
    text += f", averaged over {n_maps} half-stride shifts"
    return shift_averaged(one, strides), text


def preprocessing_with_affine(cfg: Config) -> Compose:
    """The run's preprocessing, ending in a MetaTensor that keeps its affine (not cached)."""
    steps = list(build_preprocessing(cfg).transforms[:-1])
    return Compose([*steps, EnsureTyped(keys="image", dtype=torch.float32, track_meta=True)])


def load_for_cam(path: str, cfg: Config, series_uid: str = "") -> tuple[torch.Tensor, np.ndarray]:
    """(image (channels, *spatial) float32, its voxel-to-world affine) as the model sees it;
    ``path`` a file or a DICOM series folder (``series_uid`` chooses among several)."""
    out = preprocessing_with_affine(cfg)({"image": path, "series_uid": series_uid})["image"]
    return out.as_tensor(), np.asarray(out.affine, dtype=np.float64)


def world_box_to_voxels(bbox_mm: list[list[float]], affine: np.ndarray) -> np.ndarray:
    """A world box [[x0,y0,z0],[x1,y1,z1]] (mm) as a voxel box [lo, hi] (2, 3) in the image."""
    lo, hi = np.asarray(bbox_mm[0], float), np.asarray(bbox_mm[1], float)
    corners = np.array(
        [[(hi if b else lo)[d] for d, b in enumerate(bits)] for bits in np.ndindex(2, 2, 2)]
    )
    homog = np.c_[corners, np.ones(len(corners))]
    vox = (np.linalg.inv(affine) @ homog.T).T[:, :3]
    return np.stack([vox.min(0), vox.max(0)])


def load_regions(cfg: Config) -> dict[str, dict[str, list[dict[str, Any]]]] | None:
    """The phantom's ``regions.json`` beside the labels CSV, or None for other data."""
    path = Path(cfg.data.csv).parent / "regions.json"
    return json.loads(path.read_text()) if path.is_file() else None


def peak_voxel(cam: torch.Tensor | np.ndarray) -> np.ndarray:
    """Index of the map's maximum, over its spatial axes (channel dropped)."""
    arr = np.asarray(cam).squeeze()
    return np.array(np.unravel_index(int(np.argmax(arr)), arr.shape))


def peak_in_boxes(peak: np.ndarray, boxes: list[np.ndarray], margin: float = 0.5) -> bool:
    """Whether ``peak`` lies in any voxel box (voxel centres; ``margin`` voxels of slack)."""
    return any(bool(np.all(peak >= b[0] - margin) and np.all(peak <= b[1] + margin)) for b in boxes)
