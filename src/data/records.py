"""Read a labels CSV into validated records: one dict per image with its path, label and groups.

Everything a user can get wrong in the table is checked here, before any training time is
spent, and each error names the file, the CSV row (1-based, header = row 1) and the column.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from src.config import Config, DataConfig

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm", ".npy")


class DataError(ValueError):
    """A problem with the user's data; the message names the file/row/column and what to do."""


def _index_images(root: Path) -> dict[str, Path]:
    """Map bare file names to paths for layouts with nested folders (CT-RATE's train/x/y/z)."""
    index: dict[str, Path] = {}
    for path in root.rglob("*"):
        if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
            index.setdefault(path.name, path)
    return index


def _parse_label(value: str, csv_path: Path, row: int, column: str) -> float:
    text = value.strip()
    if text in ("0", "1", "0.0", "1.0"):
        return float(text)
    shown = repr(value) if text else "a blank cell"
    raise DataError(
        f"{csv_path} row {row}, column {column!r}: label must be 0 or 1, got {shown}; "
        "fix the cell or drop the row"
    )


def _patient_of(row: dict[str, str], name: str, d: DataConfig) -> str:
    if d.patient_column and row.get(d.patient_column, "").strip():
        return row[d.patient_column].strip()
    if d.patient_id_regex:
        m = re.search(d.patient_id_regex, name)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return name  # no grouping information: every image is its own patient


def read_records(
    cfg: Config, csv_path: str | Path | None = None, image_root: str | Path | None = None
) -> list[dict[str, Any]]:
    """Read and validate ``csv_path`` (default ``data.csv``); return one record per row.

    A record holds ``image`` (absolute path), ``label`` (float32 array: one 0/1 per finding for
    multi-label, a class index for multi-class, one 0/1 for binary), ``id`` (the CSV's image
    cell), ``patient``, ``center`` and ``split`` (empty when the CSV has none).
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
    needed = [d.image_column, *d.label_columns]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"{csv_path}: column {missing[0]!r} is missing (data.image_column / "
            f"data.label_columns); the CSV has: {', '.join(columns)}"
        )
    index = _index_images(root) if d.find_images == "recursive" else None
    root_resolved = root.resolve()
    class_to_index = {c: i for i, c in enumerate(cfg.class_names)}
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
        if index is not None:
            path = index.get(Path(name).name)
            if path is None:
                raise DataError(f"{csv_path} row {i}: image {name!r} not found under {root}")
        else:
            path = (root / name).resolve()
            if not path.is_relative_to(root_resolved):
                raise DataError(
                    f"{csv_path} row {i}: image path {name!r} leads outside data.image_root "
                    f"({root}); give paths relative to the image root"
                )
            if not path.is_file():
                raise DataError(
                    f"{csv_path} row {i}: image file not found: {path}; "
                    "check data.image_root or remove the row"
                )
        if d.task == "multilabel":
            label = np.array(
                [_parse_label(row[c] or "", csv_path, i, c) for c in d.label_columns], np.float32
            )
        elif d.task == "binary":
            label = np.array(
                [_parse_label(row[d.label_columns[0]] or "", csv_path, i, d.label_columns[0])],
                np.float32,
            )
        else:
            label = np.array(_parse_class(row[d.label_columns[0]], class_to_index, csv_path, i, d))
        records.append(
            {
                "image": str(path),
                "label": label,
                "id": name,
                "patient": _patient_of(row, name, d),
                "center": (row.get(d.center_column) or "").strip() if d.center_column else "",
                "split": (row.get(d.split_column) or "").strip().lower() if d.split_column else "",
            }
        )
    return records


def _parse_class(
    value: str | None, class_to_index: dict[str, int], csv_path: Path, row: int, d: DataConfig
) -> np.float32:
    text = (value or "").strip()
    if text in class_to_index:
        return np.float32(class_to_index[text])
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(class_to_index):
        return np.float32(int(text))
    raise DataError(
        f"{csv_path} row {row}, column {d.label_columns[0]!r}: unknown class {value!r}; "
        f"expected one of {', '.join(class_to_index)} or an index 0..{len(class_to_index) - 1}"
    )


def label_matrix(records: list[dict[str, Any]]) -> np.ndarray:
    """Labels of ``records`` stacked: (N, C) for multi-label/binary, (N,) for multi-class."""
    return np.stack([r["label"] for r in records])
