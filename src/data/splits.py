"""Train/val/test splits: from the CSV's split column or seeded, patient-grouped and stratified.

Splits are made once, written to ``splits.json`` in the run folder and reused on resume. A
patient in two splits is an error whatever made the split.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from src.config import Config
from src.data.records import DataError

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def stratification_labels(records: list[dict[str, Any]], task: str) -> np.ndarray:
    """One class per record to stratify on: the class itself, or for multi-label the rarest
    positive finding of the record (-1 for none), so rare findings spread across splits."""
    labels = np.stack([r["label"] for r in records])
    if task == "multiclass":
        return labels.astype(int)
    if labels.ndim == 1 or labels.shape[1] == 1:
        return labels.reshape(len(labels)).astype(int)
    prevalence = labels.mean(0)
    order = np.argsort(prevalence)  # rarest first
    strat = np.full(len(labels), -1)
    for j in order[::-1]:  # later (rarer) findings overwrite commoner ones
        strat[labels[:, j] > 0.5] = j
    return strat


def _group_fold(idx: np.ndarray, y: np.ndarray, groups: np.ndarray, fraction: float, seed: int):
    """Split ``idx`` into (rest, held) with about ``fraction`` of it held out, by whole groups."""
    if fraction <= 0 or len(idx) == 0:
        return idx, idx[:0]
    n_splits = max(2, round(1 / fraction))
    if len(set(groups[idx])) < n_splits:
        raise DataError(
            f"only {len(set(groups[idx]))} patients to split {fraction:.0%} off; "
            "add data or lower data.split.val_fraction / test_fraction"
        )
    folder = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # rare classes with < n_splits members are expected
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        rest, held = next(folder.split(idx, y[idx], groups[idx]))
    return idx[rest], idx[held]


def make_splits(
    records: list[dict[str, Any]], cfg: Config, test_records: list[dict[str, Any]] | None = None
) -> dict[str, list[str]]:
    """Assign every record id to train, val or test following ``data.split``."""
    s = cfg.data.split
    strategy = s.strategy
    if strategy == "auto":
        strategy = "column" if any(r["split"] for r in records) else "stratified"
    ids = np.array([r["id"] for r in records])
    groups = np.array([r["patient"] for r in records])
    y = stratification_labels(records, cfg.data.task)
    all_idx = np.arange(len(records))
    test_fraction = 0.0 if test_records else s.test_fraction

    if strategy == "column":
        out: dict[str, list[str]] = {k: [] for k in SPLITS}
        for r in records:
            split = SPLIT_ALIASES.get(r["split"])
            if split is None:
                raise DataError(
                    f"image {r['id']!r}: unknown value {r['split']!r} in split column "
                    f"{cfg.data.split_column!r}; use train, val or test"
                )
            out[split].append(r["id"])
    elif strategy == "center_holdout":
        centers = np.array([r["center"] for r in records])
        known = sorted(set(centers))
        unknown = [c for c in s.holdout_centers if c not in known]
        if unknown:
            raise DataError(
                f"data.split.holdout_centers: centre {unknown[0]!r} is not in column "
                f"{cfg.data.center_column!r}; centres present: {', '.join(known)}"
            )
        held = np.isin(centers, s.holdout_centers)
        rest, val = _group_fold(all_idx[~held], y, groups, s.val_fraction, s.seed)
        out = {"train": ids[rest].tolist(), "val": ids[val].tolist(), "test": ids[held].tolist()}
    elif strategy in ("stratified", "kfold"):
        rest, test = _group_fold(all_idx, y, groups, test_fraction, s.seed)
        if strategy == "stratified":
            val_share = s.val_fraction / (1 - test_fraction)
            train, val = _group_fold(rest, y, groups, val_share, s.seed + 1)
        else:
            folder = StratifiedGroupKFold(n_splits=s.n_folds, shuffle=True, random_state=s.seed)
            train_i, val_i = list(folder.split(rest, y[rest], groups[rest]))[s.fold]
            train, val = rest[train_i], rest[val_i]
        out = {"train": ids[train].tolist(), "val": ids[val].tolist(), "test": ids[test].tolist()}
    else:  # pragma: no cover - the config validator admits only the strategies above
        raise DataError(f"data.split.strategy: unknown strategy {strategy!r}")
    if test_records:
        out["test"] = [r["id"] for r in test_records]
    check_splits(out, records + list(test_records or []))
    return out


def check_splits(splits: dict[str, list[str]], records: list[dict[str, Any]]) -> None:
    """Raise DataError for an empty train/val split or a patient found in two splits."""
    for name in ("train", "val"):
        if not splits.get(name):
            raise DataError(
                f"the {name} split is empty; check the split column or data.split settings"
            )
    patient = {r["id"]: r["patient"] for r in records}
    where: dict[str, str] = {}
    for name in SPLITS:
        for i in splits.get(name, []):
            p = patient[i]
            if where.setdefault(p, name) != name:
                raise DataError(
                    f"patient {p!r} is in both the {where[p]} and the {name} split "
                    f"(image {i!r}); a patient's scans must stay in one split"
                )


def save_splits(splits: dict[str, list[str]], path: str | Path, meta: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps({"meta": meta, **splits}, indent=1))


def load_splits(path: str | Path) -> dict[str, list[str]]:
    raw = json.loads(Path(path).read_text())
    return {k: list(raw.get(k, [])) for k in SPLITS}


def split_records(
    records: list[dict[str, Any]], splits: dict[str, list[str]], source: str = "splits.json"
) -> dict[str, list[dict[str, Any]]]:
    """Records of each split, in the split's order; an id the CSV lacks is an error."""
    by_id = {r["id"]: r for r in records}
    out = {}
    for name in SPLITS:
        missing = [i for i in splits.get(name, []) if i not in by_id]
        if missing:
            raise DataError(
                f"{source}: image {missing[0]!r} of the {name} split is not in the CSV; "
                "the data changed since the split was made: start a new run"
            )
        out[name] = [by_id[i] for i in splits.get(name, [])]
    return out


def describe_splits(parts: dict[str, list[dict[str, Any]]], class_names: list[str]) -> str:
    """One line per split: images, patients and positives (or class counts)."""
    lines = []
    for name, recs in parts.items():
        if not recs:
            continue
        labels = np.stack([r["label"] for r in recs])
        if labels.ndim == 1:
            counts = Counter(int(v) for v in labels)
            per = ", ".join(f"{class_names[k]} {counts.get(k, 0)}" for k in range(len(class_names)))
        else:
            names = class_names[-labels.shape[1] :]  # binary [negative, positive]: positives
            per = ", ".join(f"{c} {int(n)}" for c, n in zip(names, labels.sum(0), strict=False))
        patients = len({r["patient"] for r in recs})
        lines.append(f"{name}: {len(recs)} images, {patients} patients ({per})")
    return "\n".join(lines)
