"""Import a MedMNIST ``.npz`` into this project's dataset layout (``python -m src.data.medmnist``).

A MedMNIST v2 file holds ``train_images``, ``train_labels``, ``val_images``, ``val_labels``,
``test_images`` and ``test_labels`` (uint8). The import writes, into a new or empty folder:

- ``images/<split>_<index>.nii.gz`` for 3D sets (uint8, identity affine: 1 mm voxels, RAS) or
  ``images/<split>_<index>.png`` for 2D sets (8-bit grayscale);
- ``labels.csv``: ``image``, the label column(s) and ``split`` (the official train/val/test).
  Single-label sets (binary or multi-class) get one ``label`` column with the class index;
  multi-label sets (ChestMNIST) get one 0/1 column per label, ``label_0`` .. ``label_<K-1>``;
- ``medmnist.json``: what was imported (source, shapes, split sizes).

The folder appears whole or not at all (``src.files.atomic_folder``). Every problem
with the file (a missing key, counts that differ, a wrong dtype or rank) is one ``DataError``
naming the file and the key.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from tqdm import tqdm

from src.data.records import DataError
from src.files import atomic_folder

SPLITS = ("train", "val", "test")
IMPORT_VERSION = 1


def _load_arrays(npz_path: Path) -> dict[str, np.ndarray]:
    """The six arrays of a MedMNIST file, checked for presence, dtype, rank and counts."""
    if not npz_path.is_file():
        raise DataError(f"{npz_path}: file not found; give the path of a MedMNIST .npz")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            present = set(npz.files)
            needed = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
            missing = [k for k in needed if k not in present]
            if missing:
                raise DataError(
                    f"{npz_path}: key {missing[0]!r} is missing; a MedMNIST file holds "
                    f"{', '.join(needed)} (it has: {', '.join(sorted(present)) or 'nothing'})"
                )
            arrays = {k: npz[k] for k in needed}
    except DataError:
        raise
    except (OSError, ValueError) as err:  # not a zip / pickled objects / truncated file
        raise DataError(f"{npz_path}: cannot be read as a .npz file ({err})") from None
    shape = None
    for split in SPLITS:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check_images(npz_path, f"{split}_images", images)
        if shape is not None and images.shape[1:] != shape:
            raise DataError(
                f"{npz_path}: key '{split}_images' holds images of shape {images.shape[1:]}, "
                f"the train images are {shape}; all splits must have one image size"
            )
        shape = images.shape[1:]
        arrays[f"{split}_labels"] = _check_labels(npz_path, f"{split}_labels", labels)
        if len(labels) != len(images):
            raise DataError(
                f"{npz_path}: key '{split}_labels' has {len(labels)} labels but "
                f"'{split}_images' has {len(images)} images; they must match one to one"
            )
    widths = {arrays[f"{s}_labels"].shape[1] for s in SPLITS}
    if len(widths) > 1:
        raise DataError(f"{npz_path}: the splits' labels have different widths {sorted(widths)}")
    return arrays


def _check_images(npz_path: Path, key: str, images: np.ndarray) -> None:
    if images.dtype != np.uint8:
        raise DataError(
            f"{npz_path}: key {key!r} has dtype {images.dtype}, expected uint8 "
            "(MedMNIST images are 8-bit)"
        )
    if images.ndim == 4 and images.shape[-1] == 3 and min(images.shape[1:3]) > 3:
        raise DataError(
            f"{npz_path}: key {key!r} holds RGB images {images.shape[1:]}; only grayscale 2D "
            "and 3D sets are supported: convert the images to one channel first"
        )
    if images.ndim not in (3, 4):
        raise DataError(
            f"{npz_path}: key {key!r} has shape {images.shape}; expected (N, H, W) for 2D "
            "or (N, D, H, W) for 3D images"
        )


def _check_labels(npz_path: Path, key: str, labels: np.ndarray) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{npz_path}: key {key!r} has dtype {labels.dtype}, expected integer class labels"
        )
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise DataError(
            f"{npz_path}: key {key!r} has shape {labels.shape}; expected (N, 1) class indices "
            "or (N, K) 0/1 multi-label rows"
        )
    if (labels < 0).any():
        raise DataError(f"{npz_path}: key {key!r} holds negative labels; expected 0 or more")
    if labels.shape[1] > 1 and labels.max(initial=0) > 1:
        raise DataError(f"{npz_path}: key {key!r} has several columns, so its values must be 0/1")
    return labels


def _write_image(image: np.ndarray, path: Path) -> None:
    if image.ndim == 3:
        nifti = nib.Nifti1Image(image, np.eye(4))  # uint8, 1 mm isotropic, RAS
        nifti.header.set_xyzt_units("mm")
        nib.save(nifti, str(path))
    else:
        Image.fromarray(image, mode="L").save(path)


def label_columns_for(width: int) -> list[str]:
    """CSV label columns: ``label`` for one class index, ``label_0``.. for multi-label rows."""
    return ["label"] if width == 1 else [f"label_{j}" for j in range(width)]


def import_medmnist(npz_path: str | Path, out_dir: str | Path, progress: bool = True) -> Path:
    """Write ``npz_path`` as images + ``labels.csv`` into ``out_dir``, a new or empty folder.

    Returns the path of the labels CSV. The folder appears whole or not at all.
    """
    npz_path, out_dir = Path(npz_path), Path(out_dir)
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        raise DataError(
            f"{out_dir}: already exists and is not an empty folder; delete it or choose another "
            "--out"
        )
    arrays = _load_arrays(npz_path)
    is_3d = arrays["train_images"].ndim == 4
    suffix = ".nii.gz" if is_3d else ".png"
    columns = label_columns_for(arrays["train_labels"].shape[1])
    with atomic_folder(out_dir) as tmp:
        (tmp / "images").mkdir()
        rows = []
        total = sum(len(arrays[f"{s}_images"]) for s in SPLITS)
        bar = tqdm(total=total, desc=f"import {npz_path.name}", disable=not progress)
        for split in SPLITS:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                rel = f"images/{split}_{i:05d}{suffix}"
                _write_image(image, tmp / rel)
                rows.append(
                    {"image": rel}
                    | dict(zip(columns, label.tolist(), strict=True))
                    | {"split": split}
                )
                bar.update()
        bar.close()
        with open(tmp / "labels.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["image", *columns, "split"])
            writer.writeheader()
            writer.writerows(rows)
        meta = {
            "source": str(npz_path),
            "version": IMPORT_VERSION,
            "image_shape": list(arrays["train_images"].shape[1:]),
            "label_columns": columns,
            "counts": {s: len(arrays[f"{s}_images"]) for s in SPLITS},
        }
        (tmp / "medmnist.json").write_text(json.dumps(meta, indent=1))
    return out_dir / "labels.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m src.data.medmnist", description=__doc__.splitlines()[0]
    )
    ap.add_argument("npz", help="a MedMNIST .npz file, e.g. ../shared/data/medmnist/x.npz")
    ap.add_argument("--out", required=True, help="new or empty folder for images/ and labels.csv")
    args = ap.parse_args(argv)
    try:
        csv_path = import_medmnist(args.npz, args.out)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"MedMNIST imported: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
