"""``dataset_report.html``: the data set as the planner saw it, self-contained like the run
report (figures embedded, no network references): the plan with its rules, prevalence and
co-occurrence, spacing and size histograms, sample images per class after the planned
preprocessing, and every warning.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from src.config import Config
from src.data.transforms import build_preprocessing
from src.files import atomic_write
from src.plan.rules import Plan
from src.reporting.report import html_figure, html_page, html_table

FEW_POSITIVES = 10
MANY_SCANS = 5  # a patient with more scans than this and 3x the median is named
PER_CLASS = 4


def dataset_warnings(fp: dict[str, Any]) -> list[str]:
    """Findings with few positives, patients with many scans, failed images, one-class centres."""
    out = []
    labels, groups = fp["labels"], fp["groups"]
    for name, n in labels["positives"].items():
        if n < FEW_POSITIVES:
            out.append(f"{name!r} has {n} positive images (< {FEW_POSITIVES}): too few to learn")
    median = groups["scans_per_patient"]["median"][0]
    for patient, n in groups["most_scans"]:
        if n > MANY_SCANS and n >= 3 * median:
            out.append(f"patient {patient!r} has {n} images (median {median:g}): one patient "
                       "weighs heavily in its split")  # fmt: skip
    for f in fp["failed_checks"]:
        out.append(f"row {f['row']}, image {f['image']}: {f['problem']}")
    for centre, n in groups["classes_per_centre"].items():
        if n <= 1 and len(groups["centres"]) > 1:
            out.append(f"centre {centre!r} holds a single class: centre and label are confounded")
    return out


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    plt.close(fig)
    return buf.getvalue()


def _histograms(fp: dict[str, Any]) -> bytes:
    per = fp["per_image"]
    spacing = np.array([p["spacing"] for p in per if len(p["spacing"]) == fp["dims"]])
    shape = np.array([p["shape"] for p in per if len(p["shape"]) == fp["dims"]])
    fig, axes = plt.subplots(2, fp["dims"], figsize=(3.2 * fp["dims"], 5), squeeze=False)
    for j in range(fp["dims"]):
        axes[0, j].hist(spacing[:, j], bins=30)
        axes[0, j].set_title(f"spacing axis {j} (mm)", fontsize=9)
        axes[1, j].hist(shape[:, j], bins=30)
        axes[1, j].set_title(f"size axis {j} (voxels)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _montage(cfg: Config, fp: dict[str, Any], progress: bool) -> bytes:
    names = fp["labels"]["names"]
    onehot = np.array(fp["sample_labels"]).reshape(len(fp["sample_labels"]), -1)
    if onehot.shape[1] == 1 and len(names) == 1:  # one output: show both of its states
        onehot, names = np.c_[1 - onehot, onehot], [f"not {names[0]}", names[0]]
    pre = build_preprocessing(cfg)
    fig, axes = plt.subplots(len(names), PER_CLASS, figsize=(2 * PER_CLASS, 2 * len(names)))
    axes = np.asarray(axes).reshape(len(names), PER_CLASS)
    for i, name in enumerate(tqdm(names, desc="montage", disable=not progress, leave=False)):
        picked = [p for p, y in zip(fp["sample_images"], onehot, strict=True) if y[i] > 0.5]
        for k in range(PER_CLASS):
            ax = axes[i, k]
            ax.axis("off")
            if k >= len(picked):
                continue
            x = np.asarray(pre({"image": picked[k]})["image"], np.float32)[0]
            if x.ndim == 3:
                x = x[:, :, x.shape[2] // 2]  # the middle axial slice
            ax.imshow(np.rot90(x), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(name, fontsize=9, loc="left")
    fig.tight_layout()
    return _png(fig)


def write_dataset_report(
    cfg: Config, fp: dict[str, Any], plan: Plan, out_dir: str | Path, progress: bool = True
) -> Path:
    """Write ``dataset_report.html`` into ``out_dir``; returns its path."""
    labels, groups = fp["labels"], fp["groups"]
    names = labels["names"]
    warnings = dataset_warnings(fp)
    body = [
        f"<h1>Data set report: {html.escape(fp['csv'])}</h1>",
        f"<p>{fp['images']} images, {groups['patients']} patients, {fp['dims']}D, modality "
        f"guess: {html.escape(fp['modality'])}; intensities from {fp['sample']['images']} "
        f"sampled images (seed {fp['sample']['seed']}).</p>",
        html_table(
            f"Warnings ({len(warnings)})", ["warning"], [[w] for w in warnings] or [["none"]]
        ),
        html_table(
            "Plan: each key and the rule that set it",
            ["key", "value", "rule"],
            [[k, str(v), rule] for k, (v, rule) in plan.items()],
        ),
        html_table(
            "Prevalence",
            ["class", "images", "share"],
            [[n, labels["positives"][n], f"{labels['prevalence'][n]:.1%}"] for n in names],
        ),
    ]
    if len(names) > 1:
        rows = [[n, *map(str, row)] for n, row in zip(names, labels["co_occurrence"], strict=True)]
        body.append(html_table("Co-occurrence (images with both)", ["", *names], rows))
    geometry = [
        [key, *(", ".join(f"{v:.3g}" for v in fp[key][s]) for s in ("min", "median", "max"))]
        for key in ("spacing", "shape", "field_of_view_mm")
    ]
    body.append(html_table("Geometry per axis", ["", "min", "median", "max"], geometry))
    centres = [[c, n, groups["classes_per_centre"][c]] for c, n in groups["centres"].items()]
    if centres:
        body.append(html_table("Centres", ["centre", "images", "classes present"], centres))
    body.append(html_figure("Spacing and size", _histograms(fp)))
    body.append(
        html_figure(
            "Sample images per class after the planned preprocessing", _montage(cfg, fp, progress)
        )
    )
    out = Path(out_dir) / "dataset_report.html"
    with atomic_write(out) as fh:
        fh.write(html_page(f"Data set report: {fp['csv']}", body))
    return out
