"""The data a config names but does not hold yet, made on first use: the phantom sets
(``data.phantom.kind``) or a MedMNIST import (``data.medmnist_npz``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from src.config import Config, ConfigError
from src.data.medmnist import IMPORT_VERSION, import_medmnist
from src.data.phantom import generate_phantom_ct
from src.data.phantom_xray import generate_phantom_xray
from src.files import atomic_write

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
        } | ({"format": d.phantom.format} if d.phantom.format != "nifti" else {})
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
        generate_phantom_ct(
            root, d.phantom.n_patients, d.phantom.seed, progress=progress, fmt=d.phantom.format
        )
    elif d.phantom.kind == "xray":
        generate_phantom_xray(root, d.phantom.n_patients, d.phantom.seed, progress=progress)
    elif d.medmnist_npz:
        if stamp_path.is_file():  # our import of another file: replace it
            shutil.rmtree(root)
        import_medmnist(d.medmnist_npz, root, progress=progress)
    else:  # pragma: no cover - the config validator admits only the kinds above
        raise ConfigError(f"data.phantom.kind: unknown kind {d.phantom.kind!r}")
    with atomic_write(stamp_path) as fh:
        json.dump(stamp, fh)
