"""Image checks before any training time is spent: one clear line per bad file.

``check_images`` is the one entry point (called from ``prepare_splits``). For every NIfTI file it
checks the header (empty, not NIfTI, truncated, more dimensions than the task's) without
decompressing the voxels, then the voxels (NaN/Inf, constant volume); a DICOM series folder gets
the series checks of ``src.data.dicom`` (headers only), then the same voxel checks. The voxel
check reads each image once per version of it: results are remembered in
``<data.cache_dir>/image_checks.json`` keyed by path, size and modification time (of every file
of a series) and the chosen series. ``data.on_bad_sample: error`` (default) stops at the
first bad file naming it and its CSV row; ``skip`` drops bad files and prints how many.

``check_training_split`` checks what needs the split: a batch larger than the training split
(error) and a finding with no positive image in training (a warning: the run can still learn the
other findings, and that finding's AUC is reported as undefined).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from src.config import Config, ConfigError
from src.data.dicom import DicomSeriesReader, SeriesError, series_slices
from src.data.records import DataError, TaskLabels, image_version, label_matrix
from src.files import atomic_write

CHECKS_VERSION = 1
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MAX_LISTED = 10
TRUNCATED = "the file is truncated (it ends before the size its header gives); copy it again"


def _truncated(path: Path, img: nib.Nifti1Image) -> bool:
    """True when the file holds fewer voxel bytes than its header promises.

    For ``.nii.gz`` the gzip trailer's ISIZE (uncompressed size mod 2**32) is compared with the
    header; a mismatch is confirmed by reading the data (a multi-member gzip has a short ISIZE).
    """
    expected = img.dataobj.offset + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
    if not str(path).endswith(".gz"):
        return path.stat().st_size < expected
    if expected >= 2**32:
        return False  # ISIZE wraps; the voxel check will fail on a truncated file
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        (isize,) = struct.unpack("<I", fh.read(4))
    if isize >= expected:
        return False
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except (EOFError, OSError, gzip.BadGzipFile):
        return True
    return False


def header_problem(path: str | Path, spatial_dims: int, series_uid: str = "") -> str | None:
    """What is wrong with the file (or DICOM series folder: ``series_uid`` chooses the series)
    as far as its headers tell, or None. Voxels are not read."""
    path = Path(path)
    if path.is_dir():
        try:
            series_slices(path, series_uid, pixels=False)
        except SeriesError as err:
            return err.problem
        return None
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        return None  # other formats are checked when loaded
    try:
        img = nib.load(path)
    except EOFError:
        return TRUNCATED
    except Exception as err:
        return f"not a readable NIfTI file ({str(err).splitlines()[0][:120]})"
    shape = tuple(int(s) for s in img.shape)
    dims = len(shape)
    while dims > spatial_dims and shape[dims - 1] == 1:
        dims -= 1  # trailing singleton dimensions (x, y, z, 1) are harmless
    if dims > spatial_dims:
        return (
            f"has shape {shape}: a {dims}D image where a {spatial_dims}D one is expected; "
            f"export one {spatial_dims}D volume per file"
        )
    if any(s == 0 for s in shape):
        return f"has shape {shape} with an empty dimension"
    if _truncated(path, img):
        return TRUNCATED
    return None


def voxel_problem(path: str | Path, series_uid: str = "") -> str | None:
    """NaN/Inf voxels or a constant volume (a failed export), or None. Reads the voxels."""
    path = Path(path)
    if not path.is_dir() and not path.name.lower().endswith(NIFTI_SUFFIXES):
        return None
    try:
        if path.is_dir():
            reader = DicomSeriesReader(series_uid)
            data = reader.get_data(reader.read(path))[0]
        else:
            data = np.asanyarray(nib.load(path).dataobj)
    except EOFError:
        return TRUNCATED
    except Exception as err:
        return f"voxel data cannot be read ({type(err).__name__}: {str(err)[:120]})"
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        return f"has {bad} NaN or infinite voxels of {data.size}; fix the export"
    lo, hi = data.min(), data.max()
    if lo == hi:
        return f"is constant (every voxel = {lo:g}): an empty or failed export"
    return None


def _memo_key(rec: dict[str, Any], spatial_dims: int) -> str:
    path = rec["image"]
    key = [CHECKS_VERSION, path, image_version(path), rec.get("series_uid", ""), spatial_dims]
    return hashlib.md5(json.dumps(key).encode()).hexdigest()


def _image_problem(path: str, series_uid: str, spatial_dims: int) -> str | None:
    return header_problem(path, spatial_dims, series_uid) or voxel_problem(path, series_uid)


def _where(rec: dict[str, Any]) -> str:
    row = f"{rec['csv']} row {rec['row']}: " if "row" in rec else ""
    return f"{row}image {rec['image']}"


def check_spatial_dims(records: list[dict[str, Any]], cfg: Config) -> None:
    """``data.spatial_size`` must have one size per axis of the images: the first NIfTI file's
    header (no voxels read) decides; a mismatch is a config error, not a bad image."""
    first = next((r for r in records if r["image"].lower().endswith(NIFTI_SUFFIXES)), None)
    if first is None or Path(first["image"]).stat().st_size == 0:
        return
    try:
        shape = tuple(int(s) for s in nib.load(first["image"]).shape)
    except Exception:
        return  # an unreadable file is reported by the per-image checks
    dims = len(shape)
    while dims > 2 and shape[dims - 1] == 1:
        dims -= 1
    if cfg.spatial_dims == 2 and dims == 3:
        raise ConfigError(
            f"data.spatial_size: {list(cfg.data.spatial_size)} has 2 sizes (2D images) but the "
            f"images are 3D volumes ({_where(first)} has shape {shape}); give 3 sizes, e.g. "
            "[64, 64, 48]"
        )


def check_images(
    records: list[dict[str, Any]], cfg: Config, progress: bool = True
) -> list[dict[str, Any]]:
    """The records whose image passes every check (all of them, or an error, by default)."""
    check_spatial_dims(records, cfg)
    dims = cfg.spatial_dims
    memo_path = Path(cfg.data.cache_dir) / "image_checks.json"
    memo: dict[str, str] = {}
    if memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (ValueError, OSError):
            memo = {}  # a damaged memo only costs a re-check
    keys = [_memo_key(r, dims) for r in records]
    pending = zip(keys, records, strict=True)
    todo = sorted({(k, r["image"], r.get("series_uid", "")) for k, r in pending if k not in memo})
    if todo:
        workers = min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:  # zlib and numpy release the GIL
            found = pool.map(lambda kps: _image_problem(kps[1], kps[2], dims), todo)
            bar = tqdm(found, total=len(todo), desc="check images", disable=not progress)
            for (key, *_), problem in zip(todo, bar, strict=True):
                memo[key] = problem or ""
        with atomic_write(memo_path) as fh:
            json.dump(memo, fh)
    bad = [(r, memo[k]) for r, k in zip(records, keys, strict=True) if memo[k]]
    if not bad:
        return records
    if cfg.data.on_bad_sample == "error":
        rec, problem = bad[0]
        more = f" ({len(bad) - 1} more bad images)" if len(bad) > 1 else ""
        raise DataError(
            f"{_where(rec)}: {problem}{more}; fix or remove the file's row, "
            "or set data.on_bad_sample: skip"
        )
    for rec, problem in bad[:_MAX_LISTED]:
        print(f"skipped {_where(rec)}: {problem}", file=sys.stderr)
    print(
        f"data.on_bad_sample=skip: skipped {len(bad)} of {len(records)} images",
        file=sys.stderr,
    )
    dropped = {id(r) for r, _ in bad}
    kept = [r for r in records if id(r) not in dropped]
    if not kept:
        raise DataError("data.on_bad_sample=skip: every image was bad; nothing left to train on")
    return kept


def check_training_split(
    parts: dict[str, list[dict[str, Any]]], cfg: Config, task: TaskLabels
) -> None:
    """Errors and warnings that need the split: batch size, a class never seen in training."""
    train = parts["train"]
    if cfg.train.batch_size > len(train):
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is larger than the training split "
            f"({len(train)} images); lower train.batch_size"
        )
    for name, count in task.label_counts(label_matrix(train)).items():
        if count == 0:
            print(
                f"warning: no training image is labelled {name!r} (0 of {len(train)} images "
                "in the training split); the model cannot learn it and its AUC is undefined: "
                "add examples or drop it from the labels",
                file=sys.stderr,
            )
