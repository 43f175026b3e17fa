"""The fingerprint of a data set: what the planning rules (``src.plan.rules``) read.

Headers of every image (NIfTI through nibabel, PNG / JPEG through PIL, DICOM through pydicom,
no voxels read): shape, spacing and field of view in the RAS axis order the preprocessing turns
volumes to, orientation codes, stored dtype. Voxels of a seeded sample through MONAI's Auto3DSeg
``DataAnalyzer`` (``label_key=None``): per-image intensity percentiles. It reads every voxel of
every image it is given and has no header-only mode, so it gets the sample, not the whole set
(its cost on the phantoms is in docs/RESULTS.md). What it lacks is written here: labels
(prevalence, co-occurrence), patients, scans per patient, centres, the split column, the
modality guess and the existing image checks (``src.data.validate``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from monai.apps.auto3dseg import DataAnalyzer
from PIL import Image
from tqdm import tqdm

from src.config import Config
from src.data.records import DataError, label_matrix, read_records
from src.data.validate import NIFTI_SUFFIXES, header_problem, voxel_problem
from src.training.tasks import Task

FINGERPRINT_VERSION = 1
_PERCENTILES = (0.5, 1, 5, 25, 50, 75, 95, 99, 99.5)


def _nifti_header(path: str) -> dict[str, Any]:
    img = nib.load(path)
    shape = [int(s) for s in img.shape]
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()  # (x, y, z, 1) is a 3D volume; (x, y, 1) a 2D image
    zooms = [float(z) for z in img.header.get_zooms()[: len(shape)]]
    codes = "".join(nib.aff2axcodes(img.affine))[: len(shape)]
    if len(shape) == 3:  # the preprocessing turns volumes to RAS before resampling
        order = [int(ax) for ax, _ in nib.io_orientation(img.affine)]
        ras_shape, ras_zooms = [0, 0, 0], [0.0, 0.0, 0.0]
        for stored, ras in enumerate(order):
            ras_shape[ras], ras_zooms[ras] = shape[stored], zooms[stored]
        shape, zooms = ras_shape, ras_zooms
    dtype = img.get_data_dtype()
    scaled = img.dataobj.slope not in (1, None) or img.dataobj.inter not in (0, None)
    return {
        "dims": len(shape),
        "shape": shape,
        "spacing": zooms,
        "orientation": codes,
        "dtype": "float32" if scaled else str(dtype),
    }


def _picture_header(path: str) -> dict[str, Any]:
    with Image.open(path) as im:
        width, height = im.size
        mode = im.mode
    bits = 16 if mode.startswith("I;16") or mode == "I" else 8
    return {
        "dims": 2,
        "shape": [width, height],  # MONAI's PIL reader puts the width first
        "spacing": [1.0, 1.0],
        "orientation": "",
        "dtype": f"uint{bits}" if mode != "F" else "float32",
    }


def _dicom_header(path: str) -> dict[str, Any]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    spacing = [float(s) for s in getattr(ds, "PixelSpacing", [1.0, 1.0])]
    bits = int(getattr(ds, "BitsStored", 16))
    return {
        "dims": 2,
        "shape": [int(ds.Columns), int(ds.Rows)],
        "spacing": spacing[::-1],
        "orientation": "",
        "dtype": f"uint{8 if bits <= 8 else 16}",
        "modality": str(getattr(ds, "Modality", "")),
    }


def read_header(path: str) -> dict[str, Any]:
    """Shape, spacing (mm, RAS order for volumes), orientation codes and stored dtype of one
    image, from its header only."""
    name = path.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return _nifti_header(path)
    if name.endswith(".dcm"):
        return _dicom_header(path)
    return _picture_header(path)


def _distribution(values: np.ndarray) -> dict[str, list[float]]:
    """min, 10th percentile, median, 90th percentile and max per column."""
    values = np.asarray(values, float).reshape(len(values), -1)
    return {
        "min": values.min(0).tolist(),
        "p10": np.percentile(values, 10, axis=0).tolist(),
        "median": np.median(values, axis=0).tolist(),
        "p90": np.percentile(values, 90, axis=0).tolist(),
        "max": values.max(0).tolist(),
    }


def sample_intensities(paths: list[str], progress: bool = True) -> list[dict[str, float]]:
    """Per-image intensity statistics of ``paths`` from MONAI's ``DataAnalyzer``."""
    datalist = {"training": [{"image": p, "fold": 0} for p in paths]}
    quiet = logging.getLogger("monai.apps.auto3dseg.data_analyzer")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            analyzer = DataAnalyzer(
                datalist,
                "",
                output_path=str(Path(tmp) / "stats.yaml"),
                device="cpu",
                worker=0,
                label_key=None,
            )
            cases = analyzer.get_all_case_stats()["stats_by_cases"]
    finally:
        quiet.setLevel(level)
    out = []
    for case in tqdm(cases, desc="intensities", disable=not progress, leave=False):
        stats = case["image_stats"]["intensity"][0]  # channel 0
        out.append({k: float(v) for k, v in stats.items() if np.ndim(v) == 0})
    return out


def guess_modality(headers: list[dict[str, Any]], intensity: dict[str, float]) -> str:
    """``ct`` (3D with air near -1000 HU), ``volume`` (other 3D), ``radiograph`` (2D stored as
    integers), ``image`` (other 2D)."""
    three_d = np.median([h["dims"] for h in headers]) >= 3
    if three_d:
        return "ct" if intensity["p0_5"] <= -500 and intensity["p99_5"] >= 0 else "volume"
    integer = Counter(h["dtype"] for h in headers).most_common(1)[0][0].startswith(("uint", "int"))
    return "radiograph" if integer else "image"


def _labels(records: list[dict[str, Any]], task: Task) -> dict[str, Any]:
    onehot = task.one_hot(label_matrix(records))
    names = list(task.class_names) if onehot.shape[1] == len(task.class_names) else None
    names = names or list(task.output_names)
    counts = onehot.sum(0)
    co = (onehot.T @ onehot).astype(int)
    return {
        "names": names,
        "positives": dict(zip(names, counts.astype(int).tolist(), strict=True)),
        "prevalence": dict(zip(names, (counts / len(onehot)).tolist(), strict=True)),
        "co_occurrence": co.tolist(),
    }


def _groups(records: list[dict[str, Any]], task: Task) -> dict[str, Any]:
    per_patient = Counter(r["patient"] for r in records)
    centres = Counter(r["center"] for r in records if r["center"])
    onehot = task.one_hot(label_matrix(records))
    centre_classes = {}
    for centre in centres:
        rows = [i for i, r in enumerate(records) if r["center"] == centre]
        present = onehot[rows].sum(0) > 0
        centre_classes[centre] = int(present.sum())
    splits = Counter(r["split"] for r in records if r["split"])
    return {
        "patients": len(per_patient),
        "scans_per_patient": _distribution(np.array(list(per_patient.values()))),
        "most_scans": per_patient.most_common(5),
        "centres": dict(centres),
        "classes_per_centre": centre_classes,
        "split_column": dict(splits),
    }


def fingerprint(
    cfg: Config, task: Task, sample: int = 32, seed: int = 0, progress: bool = True
) -> dict[str, Any]:
    """The fingerprint of the data set ``cfg.data`` names (``csv``, ``image_root``, columns),
    read as ``task`` reads labels: headers of every image, intensities of a seeded sample of
    ``sample`` images, labels, patients, centres, failed checks."""
    records = read_records(cfg, task)
    headers, failed = [], []
    for r in tqdm(records, desc="headers", disable=not progress):
        problem, header = header_problem(r["image"], 3), None
        if not problem:
            try:
                header = read_header(r["image"])
            except Exception as err:  # an unreadable file is reported, not fatal to the plan
                problem = f"header cannot be read ({type(err).__name__}: {str(err)[:120]})"
        if problem:
            failed.append({"image": r["id"], "row": r["row"], "problem": problem})
        headers.append(header)
    good = [i for i, h in enumerate(headers) if h is not None]
    if not good:
        raise DataError(
            f"{cfg.data.csv}: no image passed the header checks (first: row {failed[0]['row']}, "
            f"{failed[0]['problem']}); check data.image_root and the files"
        )
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(good, min(sample, len(good)), replace=False).tolist())
    for i in picked:
        problem = voxel_problem(records[i]["image"])
        if problem:
            failed.append({"image": records[i]["id"], "row": records[i]["row"], "problem": problem})
    picked = [i for i in picked if not any(f["image"] == records[i]["id"] for f in failed)]
    per_image = sample_intensities([records[i]["image"] for i in picked], progress)
    keys = {"p0_5": "percentile_00_5", "p10": "percentile_10_0", "median": "median"}
    keys |= {"p90": "percentile_90_0", "p99_5": "percentile_99_5", "min": "min", "max": "max"}
    intensity = {k: float(np.median([s[v] for s in per_image])) for k, v in keys.items()}
    intensity["min"] = float(min(s["min"] for s in per_image))
    intensity["max"] = float(max(s["max"] for s in per_image))
    hs = [headers[i] for i in good]
    dims = int(np.median([h["dims"] for h in hs]))
    hs3 = [h for h in hs if h["dims"] == dims]
    shapes = np.array([h["shape"] for h in hs3])
    spacings = np.array([h["spacing"] for h in hs3])
    return {
        "version": FINGERPRINT_VERSION,
        "csv": str(cfg.data.csv),
        "image_root": str(cfg.data.image_root),
        "task": cfg.data.task,
        "label_columns": list(cfg.data.label_columns),
        "images": len(records),
        "dims": dims,
        "shape": _distribution(shapes),
        "spacing": _distribution(spacings),
        "field_of_view_mm": _distribution(shapes * spacings),
        "orientations": dict(Counter(h["orientation"] for h in hs3)),
        "dtypes": dict(Counter(h["dtype"] for h in hs3)),
        "distinct_shapes": len({tuple(h["shape"]) for h in hs3}),
        "distinct_spacings": len({tuple(np.round(h["spacing"], 3)) for h in hs3}),
        "sample": {"images": len(picked), "seed": seed},
        "intensity": intensity,
        "modality": guess_modality(hs3, intensity),
        "labels": _labels(records, task),
        "groups": _groups(records, task),
        "failed_checks": failed,
        "per_image": [
            {
                "image": records[i]["id"],
                "shape": headers[i]["shape"],
                "spacing": headers[i]["spacing"],
            }
            for i in good
        ],
        "sample_images": [records[i]["image"] for i in picked],
        "sample_labels": [task.one_hot(records[i]["label"][None])[0].tolist() for i in picked],
    }
