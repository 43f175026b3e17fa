"""Grad-CAM gallery of a run (`python -m src.reporting.explain --run outputs/<run> --n 8`).

For each finding: up to ``n`` true positives, false positives and false negatives of the split
(the most confident of each), each shown as three orthogonal slices through the map's peak,
overlaid on the scan (2D: the image). With the phantom's ``regions.json`` it also reports how
often the peak of a true positive falls inside the planted finding's box.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image as PILImage
from tqdm import tqdm

from src.config import ConfigError
from src.data.loaders import evaluation_loader
from src.files import save_figure
from src.inference.runtime import (
    USER_ERRORS,
    LoadedRun,
    SplitOutcomes,
    load_run,
    run_thresholds,
    split_outcomes,
)
from src.reporting.gradcam import (
    CAM_METHODS,
    build_cam,
    load_for_cam,
    load_regions,
    peak_in_boxes,
    peak_voxel,
    world_box_to_voxels,
)
from src.training.tracking import Picture

OUTCOMES = ("TP", "FP", "FN")
THUMBNAIL_SIDE = 96  # pixels, each slice: a 1,000-scan split's table stays far below 50 MB
JET = matplotlib.colormaps["jet"]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def pick_cases(y: np.ndarray, p: np.ndarray, decided: np.ndarray, n: int) -> dict[str, list[int]]:
    """Indices of the ``n`` most confident TP and FP and the ``n`` most missed FN of one class."""
    tp = np.flatnonzero((y == 1) & (decided == 1))
    fp = np.flatnonzero((y == 0) & (decided == 1))
    fn = np.flatnonzero((y == 1) & (decided == 0))
    return {
        "TP": tp[np.argsort(-p[tp])][:n].tolist(),
        "FP": fp[np.argsort(-p[fp])][:n].tolist(),
        "FN": fn[np.argsort(p[fn])][:n].tolist(),
    }


def compute_cam(run: LoadedRun, cam, record: dict[str, Any], class_idx: int):
    """(image, map, affine) of one record's scan, both (spatial...) numpy arrays; the image is
    the first input channel (the first of data.windows)."""
    image, affine = load_for_cam(record["image"], run.cfg, record.get("series_uid", ""))
    x = image[None].to(run.device).requires_grad_(True)
    heat = cam(x, class_idx).detach().cpu().numpy()[0, 0]
    return image.numpy()[0], heat, affine


def orthogonal_slices(volume: np.ndarray, at: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(view, slice) through voxel ``at``: axial, coronal and sagittal of a volume, or the 2D
    image itself; transposed, to be shown with the origin at the bottom."""
    if volume.ndim == 2:
        return [("image", volume.T)]
    x, y, z = at
    return [("axial", volume[:, :, z].T), ("coronal", volume[:, y, :].T), ("sagittal", volume[x].T)]


def _views(image: np.ndarray, heat: np.ndarray, peak: np.ndarray):
    pairs = zip(orthogonal_slices(image, peak), orthogonal_slices(heat, peak), strict=True)
    return [(v, img, hm) for (v, img), (_, hm) in pairs]


def thumbnail(image: np.ndarray, heat: np.ndarray | None = None) -> np.ndarray:
    """uint8 pixels of a W&B table thumbnail: a [0, 1] image's three orthogonal mid-slices side
    by side (3D) or the image (2D), each at most ``THUMBNAIL_SIDE`` pixels; with a [0, 1]
    ``heat`` map, the slices through its peak with the map overlaid (RGB)."""
    at = np.array(image.shape) // 2 if heat is None else peak_voxel(heat)
    slices = orthogonal_slices(np.clip(image, 0, 1), at)
    maps = [m for _, m in orthogonal_slices(heat, at)] if heat is not None else [None] * len(slices)
    panels = []
    for (_, img), hm in zip(slices, maps, strict=True):
        pixels = img if hm is None else (1 - 0.35) * img[..., None] + 0.35 * JET(hm)[..., :3]
        panel = PILImage.fromarray(np.flipud(np.round(pixels * 255)).astype(np.uint8))
        panel.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        panels.append(np.asarray(panel))
    height = max(p.shape[0] for p in panels)
    gap = [(0, 0)] * (panels[0].ndim - 2)  # RGB panels keep their channels
    padded = [np.pad(p, [(0, height - p.shape[0]), (0, 1), *gap]) for p in panels]
    return np.concatenate(padded, axis=1)[:, :-1]


def split_thumbnails(
    run: LoadedRun, records: list[dict], progress: bool = False
) -> list[np.ndarray]:
    """A ``thumbnail`` of every record, preprocessed as the model saw it (the run's caches)."""
    out = []
    batches = evaluation_loader(records, run.cfg)
    for batch in tqdm(batches, desc="thumbnails", leave=False, disable=not progress):
        out += [thumbnail(x[0].float().numpy()) for x in batch["image"]]
    return out


@dataclass
class Gallery:
    """The gallery's PNGs (one per class), how the maps were made, and an overlay thumbnail of
    each scan shown (index in the split -> its first map) for the W&B predictions table."""

    paths: list[Path]
    method: str
    overlays: dict[int, Picture]


def draw_gallery(
    run: LoadedRun,
    sp: SplitOutcomes,
    out_dir: Path,
    n: int,
    method: str = "",
    layer: str = "",
) -> Gallery:
    """One PNG per class with cases to show (rows TP/FP/FN cases, columns the slices), made
    with ``method`` / ``layer`` (default: the run's ``evaluation.gradcam_*``)."""
    cam, method = build_cam(run.model, run.cfg, method, layer)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, probs = sp.records, sp.probs
    paths, overlays = [], {}
    for j, name in enumerate(run.task.output_names):
        cases = pick_cases(sp.truth[:, j], probs[:, j], sp.decided[:, j], n)
        rows = [(kind, i) for kind in OUTCOMES for i in cases[kind]]
        if not rows:
            continue
        n_cols = 3 if run.cfg.spatial_dims == 3 else 1
        fig, axes = plt.subplots(
            len(rows), n_cols, figsize=(2.4 * n_cols, 2.3 * len(rows)), squeeze=False
        )
        for r, (kind, i) in enumerate(rows):
            image, heat, _ = compute_cam(run, cam, records[i], j)
            caption = f"{name}: {kind} p={probs[i, j]:.2f}"
            overlays.setdefault(i, Picture(thumbnail(image, heat), caption))
            for c, (view, img, hm) in enumerate(_views(image, heat, peak_voxel(heat))):
                ax = axes[r, c]
                ax.imshow(img, cmap="gray", origin="lower")
                ax.imshow(hm, cmap="jet", alpha=0.35, origin="lower", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                title = f"{kind} p={probs[i, j]:.2f} {Path(records[i]['id']).name[:18]}"
                ax.set_title(title if c == 0 else view, fontsize=6)
        fig.suptitle(name, fontsize=9)
        fig.tight_layout()
        path = out_dir / f"gradcam_{slug(name)}.png"
        save_figure(fig, path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return Gallery(paths, method, overlays)


def localisation(
    run: LoadedRun,
    sp: SplitOutcomes,
    margin: float = 0.5,
    method: str = "",
    layer: str = "",
) -> dict[str, dict[str, float]] | None:
    """Per finding: true positives whose map peak lies in a planted region (phantom only)."""
    regions = load_regions(run.cfg)
    if regions is None:
        return None
    cam, _ = build_cam(run.model, run.cfg, method, layer)
    records = sp.records
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(run.task.output_names):
        hits = total = 0
        for i in np.flatnonzero((sp.truth[:, j] == 1) & (sp.decided[:, j] == 1)):
            found = regions.get(records[i]["id"], {}).get(name)
            if not found:
                continue
            _, heat, affine = compute_cam(run, cam, records[i], j)
            boxes = [world_box_to_voxels(b["bbox_mm"], affine) for b in found]
            hits += peak_in_boxes(peak_voxel(heat), boxes, margin)
            total += 1
        out[name] = {
            "hits": hits,
            "true_positives": total,
            "rate": hits / total if total else np.nan,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.reporting.explain", description=__doc__)
    ap.add_argument("--run", required=True, help="run folder, e.g. outputs/ct-20261121-101500")
    ap.add_argument("--n", type=int, default=4, help="cases per finding and outcome (TP/FP/FN)")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--checkpoint", default="best", help="best, last, final or a path")
    ap.add_argument("--localisation", action="store_true", help="phantom: peak-in-region rate")
    ap.add_argument("--method", default="", choices=["", *CAM_METHODS], help="default: config")
    ap.add_argument("--layer", default="", help="CNN module name (default: config, or automatic)")
    args = ap.parse_args(argv)
    try:
        run = load_run(args.run, args.checkpoint)
        if run.members:
            raise ConfigError(
                f"--run: {args.run} is an ensemble; Grad-CAM explains one model: give one of "
                f"its runs, e.g. --run {run.members[0].run_dir}"
            )
        sp = split_outcomes(run, args.split, thresholds=run_thresholds(run))
        out = Path(args.run) / f"gradcam-{args.split}"
        gallery = draw_gallery(run, sp, out, args.n, args.method, args.layer)
        print(gallery.method)
        for path in gallery.paths:
            print(path)
        if args.localisation:
            print_localisation(localisation(run, sp, method=args.method, layer=args.layer))
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def print_localisation(result: dict[str, dict[str, float]] | None) -> None:
    if result is None:
        print("no regions.json beside the labels CSV: localisation needs the phantom")
        return
    hits = sum(r["hits"] for r in result.values())
    total = sum(r["true_positives"] for r in result.values())
    for name, r in result.items():
        print(f"{name:32s} {r['hits']:>4}/{r['true_positives']:<4} {r['rate']:.2f}")
    print(f"{'all findings':32s} {hits:>4}/{total:<4} {hits / max(total, 1):.2f}")


if __name__ == "__main__":
    sys.exit(main())
