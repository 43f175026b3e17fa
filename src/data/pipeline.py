"""From config to split records: built-in data on first use, CSV validation, splits.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.config import Config, ConfigError
from src.data.records import DataError, read_records
from src.data.splits import load_splits, make_splits, save_splits, split_records

PHANTOM_VERSION = 3


def ensure_phantom(cfg: Config, progress: bool = True) -> None:
    """Generate the built-in phantom set into ``data.image_root`` when it is missing or was
    generated with other settings (only a folder this code generated is ever replaced)."""
    ph = cfg.data.phantom
    if ph.kind == "none":
        return
    root = Path(cfg.data.image_root)
    expected_csv = root / "labels.csv"
    if Path(cfg.data.csv).resolve() != expected_csv.resolve():
        raise ConfigError(
            f"data.csv: with data.phantom.kind={ph.kind} the CSV is generated as {expected_csv}; "
            "set data.csv to that path"
        )
    stamp = {"kind": ph.kind, "n_patients": ph.n_patients, "seed": ph.seed, "version": PHANTOM_VERSION}
    stamp_path = root / "phantom.json"
    if expected_csv.is_file() and stamp_path.is_file():
        if json.loads(stamp_path.read_text()) == stamp:
            return
    elif expected_csv.is_file():
        return  # a user's own data where the phantom would go: never overwrite it
    if ph.kind == "ct":
        from src.data.phantom import generate_phantom_ct

        generate_phantom_ct(root, ph.n_patients, ph.seed, progress=progress)
    elif ph.kind == "xray":
        from src.data.phantom_xray import generate_phantom_xray

        generate_phantom_xray(root, ph.n_patients, ph.seed, progress=progress)
    else:  # pragma: no cover - the config validator admits only the kinds above
        raise ConfigError(f"data.phantom.kind: unknown kind {ph.kind!r}")
    stamp_path.write_text(json.dumps(stamp))


def prepare_splits(
    cfg: Config, run_dir: Path, reuse: bool, progress: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Records of train/val/test. Splits come from ``run_dir/splits.json`` when ``reuse`` (a
    resumed run), else they are made from ``data.split`` and written there."""
    ensure_phantom(cfg, progress)
    records = read_records(cfg)
    test_records = []
    if cfg.data.test_csv:
        test_records = read_records(cfg, cfg.data.test_csv, cfg.data.test_image_root or None)
        clash = {r["id"] for r in records} & {r["id"] for r in test_records}
        if clash:
            raise DataError(
                f"data.test_csv: image {sorted(clash)[0]!r} is also in data.csv; "
                "a test image must not be trained on"
            )
    path = run_dir / "splits.json"
    if reuse and path.is_file():
        splits = load_splits(path)
    else:
        splits = make_splits(records, cfg, test_records)
        meta = {
            "strategy": cfg.data.split.strategy,
            "seed": cfg.data.split.seed,
            "csv": str(cfg.data.csv),
            "test_csv": str(cfg.data.test_csv),
        }
        save_splits(splits, path, meta)
    return split_records(records + test_records, splits, str(path))
