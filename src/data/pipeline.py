"""From config to split records: built-in or imported data on first use, CSV validation,
splits.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from src.config import Config, ConfigError
from src.data.medmnist import IMPORT_VERSION, import_medmnist
from src.data.records import DataError, read_records
from src.data.splits import load_splits, make_splits, save_splits, split_records
from src.data.validate import check_images

# bumped when a generator's output changes: the stamped folder is then made again
PHANTOM_VERSIONS = {"ct": 5, "xray": 5}


def ensure_builtin_data(cfg: Config, progress: bool = True) -> None:
    """Make the data a config names but does not hold yet, in ``data.image_root``: the phantom
    set (``data.phantom.kind``) or a MedMNIST import (``data.medmnist_npz``).

    A stamp file records what was made; the folder is remade when the settings change, and only
    a folder this code made is ever replaced (a user's own ``labels.csv`` there is left alone).
    """
    d = cfg.data
    if d.phantom.kind != "none":
        key, stamp_name = "data.phantom.kind", "phantom.json"
        stamp = {
            "kind": d.phantom.kind,
            "n_patients": d.phantom.n_patients,
            "seed": d.phantom.seed,
            "version": PHANTOM_VERSIONS[d.phantom.kind],
        }
    elif d.medmnist_npz:
        key, stamp_name = "data.medmnist_npz", "import.json"
        stamp = {"medmnist_npz": str(Path(d.medmnist_npz).resolve()), "version": IMPORT_VERSION}
    else:
        return
    root = Path(d.image_root)
    expected_csv = root / "labels.csv"
    if Path(d.csv).resolve() != expected_csv.resolve():
        raise ConfigError(
            f"data.csv: with {key} set the CSV is generated as {expected_csv}; "
            "set data.csv to that path"
        )
    stamp_path = root / stamp_name
    if expected_csv.is_file() and stamp_path.is_file():
        if json.loads(stamp_path.read_text()) == stamp:
            return
    elif expected_csv.is_file():
        return  # a user's own data where the generated set would go: never overwrite it
    if d.phantom.kind == "ct":
        from src.data.phantom import generate_phantom_ct

        generate_phantom_ct(root, d.phantom.n_patients, d.phantom.seed, progress=progress)
    elif d.phantom.kind == "xray":
        from src.data.phantom_xray import generate_phantom_xray

        generate_phantom_xray(root, d.phantom.n_patients, d.phantom.seed, progress=progress)
    elif d.medmnist_npz:
        if stamp_path.is_file():  # our import of another file: replace it
            shutil.rmtree(root)
        import_medmnist(d.medmnist_npz, root, progress=progress)
    else:  # pragma: no cover - the config validator admits only the kinds above
        raise ConfigError(f"data.phantom.kind: unknown kind {d.phantom.kind!r}")
    stamp_path.write_text(json.dumps(stamp))


def prepare_splits(
    cfg: Config, run_dir: Path, reuse: bool, progress: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Records of train/val/test. Splits come from ``run_dir/splits.json`` when ``reuse`` (a
    resumed run), else they are made from ``data.split`` and written there."""
    ensure_builtin_data(cfg, progress)
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
    # every image file checked (header and voxels, remembered per file version) before training
    records = check_images(records, cfg, progress)
    test_records = check_images(test_records, cfg, progress) if test_records else []
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
