"""Train/val/test splits: from the CSV's split column or seeded, patient-grouped and stratified.

``prepare_splits`` is the way from a config to the records of each split: built-in data made on
first use, the CSV(s) read and checked, every image checked, and the splits made once, written to
``splits.json`` in the run folder and reused on resume. ``run_splits`` reads a finished run's
splits as they are. A patient in two splits is an error whatever made the split.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from src.config import Config
from src.data.builtin import ensure_builtin_data
from src.data.records import DataError, TaskLabels, label_matrix, read_records
from src.data.validate import check_images
from src.files import atomic_write

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


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
    records: list[dict[str, Any]],
    cfg: Config,
    task: TaskLabels,
    test_records: list[dict[str, Any]] | None = None,
) -> dict[str, list[str]]:
    """Assign every record id to train, val or test following ``data.split``; splits are
    stratified on ``task.strata`` of the labels."""
    s = cfg.data.split
    strategy = s.strategy
    if strategy == "auto":
        strategy = "column" if any(r["split"] for r in records) else "stratified"
    ids = np.array([r["id"] for r in records])
    groups = np.array([r["patient"] for r in records])
    y = task.strata(label_matrix(records))
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
        if strategy == "kfold" and not test_records and any(r["split"] for r in records):
            # the CSV's own test rows stay held out; every other row is in the folds' pool
            test = all_idx[[SPLIT_ALIASES.get(r["split"]) == "test" for r in records]]
            rest = np.setdiff1d(all_idx, test)
        else:
            rest, test = _group_fold(all_idx, y, groups, test_fraction, s.seed)
        if strategy == "stratified":
            val_share = s.val_fraction / (1 - test_fraction)
            train, val = _group_fold(rest, y, groups, val_share, s.seed + 1)
        else:
            folder = StratifiedGroupKFold(n_splits=s.n_folds, shuffle=True, random_state=s.seed)
            with warnings.catch_warnings():  # rare classes with < n_folds members are expected
                warnings.filterwarnings("ignore", "The least populated class", UserWarning)
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
    """``splits.json`` (read back on every resume), written atomically."""
    with atomic_write(path) as fh:
        json.dump({"meta": meta, **splits}, fh, indent=1)


def load_splits(path: str | Path) -> dict[str, list[str]]:
    raw = json.loads(Path(path).read_text())
    return {k: list(raw.get(k, [])) for k in SPLITS}


def merge_fold_splits(fold_dirs: list[Path], path: Path) -> dict[str, list[str]]:
    """A cross-validation group's ``splits.json`` from its folds' (written to ``path``): test is
    their common test split, train the pool (every fold's validation split, in fold order), val
    empty. Folds of different splits are an error: a different test split, a pool scan validated
    twice or by none."""
    folds = [load_splits(Path(d) / "splits.json") for d in fold_dirs]
    first, test = Path(fold_dirs[0]), folds[0]["test"]
    pool = [i for f in folds for i in f["val"]]
    for d, f in zip(fold_dirs, folds, strict=True):
        if (
            f["test"] != test
            or len(set(pool)) != len(pool)
            or set(f["train"] + f["val"]) != set(pool)
        ):
            raise DataError(
                f"{d}/splits.json: does not fit the splits of {first}; the folds of a group come "
                "from one split (the same data and data.split settings)"
            )
    splits = {"train": pool, "val": [], "test": test}
    save_splits(splits, path, {"strategy": "kfold", "folds": [Path(d).name for d in fold_dirs]})
    return splits


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


def describe_splits(parts: dict[str, list[dict[str, Any]]], task: TaskLabels) -> str:
    """One line per split: images, patients and label counts (positives, or images per class)."""
    lines = []
    for name, recs in parts.items():
        if not recs:
            continue
        counts = task.label_counts(label_matrix(recs))
        per = ", ".join(f"{c} {n}" for c, n in counts.items())
        ignored = {c: n for c, n in task.ignored_counts(label_matrix(recs)).items() if n}
        if ignored:
            per += "; ignored cells: " + ", ".join(f"{c} {n}" for c, n in ignored.items())
        patients = len({r["patient"] for r in recs})
        lines.append(f"{name}: {len(recs)} images, {patients} patients ({per})")
    return "\n".join(lines)


def read_all_records(
    cfg: Config, task: TaskLabels
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(records of ``data.csv``, records of ``data.test_csv`` or []); an image in both is an
    error."""
    records = read_records(cfg, task)
    if not cfg.data.test_csv:
        return records, []
    test_records = read_records(cfg, task, cfg.data.test_csv, cfg.data.test_image_root or None)
    clash = {r["id"] for r in records} & {r["id"] for r in test_records}
    if clash:
        raise DataError(
            f"data.test_csv: image {sorted(clash)[0]!r} is also in data.csv; "
            "a test image must not be trained on"
        )
    return records, test_records


def prepare_splits(
    cfg: Config, run_dir: Path, reuse: bool, task: TaskLabels, progress: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Records of train/val/test. Splits come from ``run_dir/splits.json`` when ``reuse`` (a
    resumed run), else they are made from ``data.split`` and written there."""
    ensure_builtin_data(cfg, progress)
    records, test_records = read_all_records(cfg, task)
    # every image file checked (header and voxels, remembered per file version) before training
    records = check_images(records, cfg, progress)
    test_records = check_images(test_records, cfg, progress) if test_records else []
    path = Path(run_dir) / "splits.json"
    if reuse and path.is_file():
        splits = load_splits(path)
    else:
        splits = make_splits(records, cfg, task, test_records)
        meta = {
            "strategy": cfg.data.split.strategy,
            "seed": cfg.data.split.seed,
            "csv": str(cfg.data.csv),
            "test_csv": str(cfg.data.test_csv),
        }
        save_splits(splits, path, meta)
    return split_records(records + test_records, splits, str(path))


def run_splits(cfg: Config, run_dir: Path, task: TaskLabels) -> dict[str, list[dict[str, Any]]]:
    """Records of a finished run's own ``splits.json``. Unlike training, this never (re)generates
    data: a run is evaluated on the data it was split from, as it is."""
    path = Path(run_dir) / "splits.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; is {run_dir} a run folder of the trainer?")
    records, test_records = read_all_records(cfg, task)
    return split_records(records + test_records, load_splits(path), str(path))
