"""Read a labels CSV into validated records: one dict per image with its path, label and groups.

Everything a user can get wrong in the table is checked here, before any training time is
spent, and each error names the file, the CSV row (1-based, header = row 1) and the column.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from src.config import Config, DataConfig
from src.data.dicom import is_series_folder, series_version

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm", ".npy")


class DataError(ValueError):
    """A problem with the user's data; the message names the file/row/column and what to do."""


class LabelError(ValueError):
    """A label cell the task cannot read: the column and what is wrong (the row is added)."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column, self.message = column, message


class TaskLabels(Protocol):
    """What the data layer asks of the task (``src.training.tasks``), so that it never branches
    on the task kind itself: read a row's labels, count them (and the unknown ones), stratify on
    them."""

    output_names: list[str]

    def parse_label(self, cells: Mapping[str, str], columns: list[str]) -> np.ndarray: ...

    def label_counts(self, labels: np.ndarray) -> dict[str, int]: ...

    def strata(self, labels: np.ndarray) -> np.ndarray: ...

    def ignored_counts(self, labels: np.ndarray) -> dict[str, int]: ...


def image_version(path: str | Path) -> list[Any]:
    """What changes when an image changes: size and modification time of the file, or of
    every file of a DICOM series folder (caches and image checks are keyed by it)."""
    if os.path.isdir(path):
        return series_version(path)
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _index_images(root: Path) -> dict[str, Path]:
    """Map bare file names to paths for layouts with nested folders (CT-RATE's train/x/y/z)."""
    index: dict[str, Path] = {}
    for path in root.rglob("*"):
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            index.setdefault(path.name, path)
    return index


def _image_path(root: Path, name: str, allow_absolute: bool) -> Path | None:
    """``root/name`` made absolute, or None when it leaves ``root`` (an absolute ``name``
    outside the root only passes with ``allow_absolute``). The test is lexical (``..``), so
    symlinks the data owner placed inside the root still work."""
    base = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(base, name))  # an absolute name replaces base
    if os.path.commonpath([base, path]) == base or (allow_absolute and os.path.isabs(name)):
        return Path(path)
    return None


def _find_image(
    name: str, root: Path, index: dict[str, Path] | None, allow_absolute: bool, where: str
) -> Path:
    """The file a CSV image cell names: found by file name anywhere under ``root`` (``index``,
    ``data.find_images: recursive``), else ``root/name``, which must stay inside ``root``."""
    if index is not None:
        path = index.get(Path(name).name)
        if path is None:
            raise DataError(f"{where}: image {name!r} not found under {root}")
        return path
    path = _image_path(root, name, allow_absolute)
    if path is None:
        raise DataError(
            f"{where}: image path {name!r} leads outside data.image_root ({root}); give paths "
            "relative to the image root, or set data.allow_absolute_paths: true to accept "
            "absolute paths"
        )
    if not path.is_file() and not is_series_folder(path):
        what = "holds no DICOM files" if path.is_dir() else "not found"
        raise DataError(
            f"{where}: image file or DICOM series folder {what}: {path}; check "
            "data.image_root or remove the row"
        )
    return path


def _patient_of(row: dict[str, str], name: str, d: DataConfig) -> str:
    if d.patient_column and row.get(d.patient_column, "").strip():
        return row[d.patient_column].strip()
    if d.patient_id_regex:
        m = re.search(d.patient_id_regex, name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return name  # no grouping information: every image is its own patient


def read_records(
    cfg: Config,
    task: TaskLabels,
    csv_path: str | Path | None = None,
    image_root: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Read and validate ``csv_path`` (default ``data.csv``); return one record per row.

    A record holds ``image`` (absolute path), ``label`` (float32 array, as ``task.parse_label``
    reads the label cells), ``id`` (the CSV's image cell), ``patient``, ``center`` and ``split``
    (empty when the CSV has none), ``series_uid`` (``data.series_uid_column``: the series of a
    DICOM folder; empty for the folder's only series), and where it came from (``csv``,
    ``row``). ``image`` is a file or a folder of one DICOM series.
    """
    d = cfg.data
    csv_path = Path(csv_path or d.csv)
    root = Path(image_root or d.image_root)
    if not csv_path.is_file():
        raise DataError(f"data.csv: file not found: {csv_path}; point data.csv at your labels CSV")
    if not root.is_dir():
        raise DataError(f"data.image_root: folder not found: {root}")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = list(reader)
    if not rows:
        raise DataError(f"{csv_path}: the CSV has no data rows")
    needed = [d.image_column, *d.label_columns] + [c for c in [d.series_uid_column] if c]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"{csv_path}: column {missing[0]!r} is missing (data.image_column / "
            f"data.label_columns / data.series_uid_column); the CSV has: {', '.join(columns)}"
        )
    index = _index_images(root) if d.find_images == "recursive" else None
    records, seen = [], {}
    for i, row in enumerate(rows, start=2):
        name = (row[d.image_column] or "").strip()
        if not name:
            raise DataError(f"{csv_path} row {i}: column {d.image_column!r} is empty")
        if name in seen:
            raise DataError(
                f"{csv_path} row {i}: image {name!r} is listed twice (first at row {seen[name]}); "
                "remove the duplicate row"
            )
        seen[name] = i
        path = _find_image(name, root, index, d.allow_absolute_paths, f"{csv_path} row {i}")
        try:
            label = task.parse_label(row, d.label_columns)
        except LabelError as err:
            raise DataError(f"{csv_path} row {i}, column {err.column!r}: {err.message}") from None
        records.append(
            {
                "image": str(path),
                "label": label,
                "id": name,
                "patient": _patient_of(row, name, d),
                "center": (row.get(d.center_column) or "").strip() if d.center_column else "",
                "split": (row.get(d.split_column) or "").strip().lower() if d.split_column else "",
                "series_uid": (row[d.series_uid_column] or "").strip()
                if d.series_uid_column
                else "",
                "csv": str(csv_path),
                "row": i,
            }
        )
    return records


def label_matrix(records: list[dict[str, Any]]) -> np.ndarray:
    """Labels of ``records`` stacked: (N, C) for multi-label/binary, (N,) for multi-class."""
    return np.stack([r["label"] for r in records])
