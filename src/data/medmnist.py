"""Download and import MedMNIST ``.npz`` files (``python -m src.data.medmnist``).

``--download NAME`` fetches the official MedMNIST v2 file ``NAME.npz`` (``pneumoniamnist``,
``adrenalmnist3d``, ``adrenalmnist3d_64``, ...) into ``data/medmnist/`` and checks its MD5.

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

    python -m src.data.medmnist --download adrenalmnist3d   # data/medmnist/adrenalmnist3d.npz
    python -m src.data.medmnist FILE.npz --out DIR            # import by hand

A config that names the file (``data.medmnist_npz``) imports it on first use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image
from tqdm import tqdm

from src.data.records import DataError
from src.files import atomic_folder, atomic_write, write_csv

SPLITS = ("train", "val", "test")
IMPORT_VERSION = 1

NPZ_DIR = Path("data/medmnist")  # git-ignored; the configs' data.medmnist_npz files live here
# The official files and their MD5s, as the ``medmnist`` package lists them (``INFO`` in
# medmnist/info.py): every set at 28 pixels (no suffix), 2D sets also at 64, 128 and 224, 3D sets
# at 64. All lie in one Zenodo record under the same name pattern.
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"
MEDMNIST_MD5 = {
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "pathmnist_64": "55aa9c1e0525abe5a6b9d8343a507616",
    "pathmnist_128": "ac42d08fb904d92c244187169d1fd1d9",
    "pathmnist_224": "2c51a510bcdc9cf8ddb2af93af1eadec",
    "chestmnist": "02c8a6516a18b556561a56cbdd36c4a8",
    "chestmnist_64": "9de6cd0b934ebb5b7426cfba5efbae16",
    "chestmnist_128": "db107e5590b27930b62dbaf558aebee3",
    "chestmnist_224": "45bd33e6f06c3e8cdb481c74a89152aa",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "dermamnist_64": "b70a2f5635c6199aeaa28c31d7202e1f",
    "dermamnist_128": "2defd784463fa5243564e855ed717de1",
    "dermamnist_224": "8974907d8e169bef5f5b96bc506ae45d",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "octmnist_64": "e229e9440236b774d9f0dfef9d07bdaf",
    "octmnist_128": "0a97e76651ace45c5d943ee3f65b63ae",
    "octmnist_224": "abc493b6d529d5de7569faaef2773ba3",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "pneumoniamnist_64": "8f4eceb4ccffa70c672198ea285246c6",
    "pneumoniamnist_128": "05b46931834c231683c68f40c47b2971",
    "pneumoniamnist_224": "d6a3c71de1b945ea11211b03746c1fe1",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "retinamnist_64": "afda852cc34dcda56f86ad2b2457dbcc",
    "retinamnist_128": "e48e916a24454daf90583d4e6efb1a18",
    "retinamnist_224": "eae7e3b6f3fcbda4ae613ebdcbe35348",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "breastmnist_64": "742edef2a1fd1524b2efff4bd7ba9364",
    "breastmnist_128": "363e4b3f8d712e9b5de15470a2aaadf1",
    "breastmnist_224": "b56378a6eefa9fed602bb16d192d4c8b",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "bloodmnist_64": "2b94928a2ae4916078ca51e05b6b800b",
    "bloodmnist_128": "adace1e0ed228fccda1f39692059dd4c",
    "bloodmnist_224": "b718ff6835fcbdb22ba9eacccd7b2601",
    "tissuemnist": "ebe78ee8b05294063de985d821c1c34b",
    "tissuemnist_64": "123ece2eba09d0aa5d698fda57103344",
    "tissuemnist_128": "61b955355d7425a89687b06cca3ce0c2",
    "tissuemnist_224": "b077128c4a949f0a4eb01517f9037b9c",
    "organamnist": "68e3f8846a6bd62f0c9bf841c0d9eacc",
    "organamnist_64": "2dcccc29b88e6da5a01161ef20cda288",
    "organamnist_128": "eeae80d0a227a8d099027e1b3cfd3b60",
    "organamnist_224": "50747347e05c87dd3aaf92c49f9f3170",
    "organcmnist": "b9ceb9546e10131b32923c5bbeaea2b1",
    "organcmnist_64": "3ce34a8724ea6f548e6db4744d03b6a9",
    "organcmnist_128": "773c1f009daa3fe5d9a2a201b2a7ed94",
    "organcmnist_224": "050f5e875dc056f6768abf94ec9995d1",
    "organsmnist": "9ab87b696fb54e2a387ebe992d6ed5f1",
    "organsmnist_64": "53a6d115339d874c25e309a994ff46d3",
    "organsmnist_128": "ded0c5fa01a95dc4978b956f613e9b8e",
    "organsmnist_224": "b354719e553fbbb2513d5533f52a4cb1",
    "organmnist3d": "a0c5a1ff56af4f155c46d46fbb45a2fe",
    "organmnist3d_64": "58a2205adf14a9d0a189cb06dc78bf10",
    "nodulemnist3d": "8755a7e9e05a4d9ce80a24c3e7a256f3",
    "nodulemnist3d_64": "c47c5b7d457bf6332200d2ea6d64ecd8",
    "adrenalmnist3d": "bbd3c5a5576322bc4cdfea780653b1ce",
    "adrenalmnist3d_64": "17721accfe9fb005146a47d33bc54b2f",
    "fracturemnist3d": "6aa7b0143a6b42da40027a9dda61302f",
    "fracturemnist3d_64": "f01d7e6316aedf4210da0da5b7437b42",
    "vesselmnist3d": "b41fd4f7e7e2feedddb201585ecafa1b",
    "vesselmnist3d_64": "6bb274a8846e1097066dcd64e2c4520f",
    "synapsemnist3d": "1235b78a3cd6280881dd7850a78eadb6",
    "synapsemnist3d_64": "43bd14ebf3af9d3dd072446fedc14d5e",
}


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download_failed(url: str, target: Path, err: OSError) -> str:
    # a bare URLError wraps the socket error (no network, unknown host); others say it themselves
    reason = err.reason if type(err) is urllib.error.URLError else err
    return (
        f"cannot download {url} to {target} ({' '.join(str(reason).split())}); to use a copy "
        "you already have, give it to the trainer with --set data.medmnist_npz=PATH"
    )


def _chunks(response: Any, url: str, target: Path) -> Iterator[bytes]:
    try:
        while chunk := response.read(1 << 20):
            yield chunk
    except OSError as err:  # the connection broke off part-way
        raise DataError(_download_failed(url, target, err)) from None


def download_medmnist(name: str, npz_dir: str | Path = NPZ_DIR, progress: bool = True) -> Path:
    """Fetch the official MedMNIST v2 file ``NAME.npz`` into ``npz_dir`` and check its MD5.

    Returns the file's path. The file appears whole or not at all: a download whose MD5 differs
    from the official one is deleted. A file already there with the official MD5 is kept.
    """
    if name not in MEDMNIST_MD5:
        raise DataError(
            f"--download {name!r}: not a MedMNIST v2 file; known names: {', '.join(MEDMNIST_MD5)}"
        )
    url, expected = MEDMNIST_URL.format(name=name), MEDMNIST_MD5[name]
    target = Path(npz_dir) / f"{name}.npz"
    if target.is_file() and _md5(target) == expected:
        return target
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except OSError as err:  # URLError (no network, HTTP error status) or a timeout
        raise DataError(_download_failed(url, target, err)) from None
    digest = hashlib.md5()
    with response, atomic_write(target, "wb") as fh:
        size = int(response.headers.get("Content-Length") or 0) or None
        bar = tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"download {target.name}",
            disable=not progress,
        )
        for chunk in _chunks(response, url, target):
            fh.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
        bar.close()
        if digest.hexdigest() != expected:  # raising here makes atomic_write delete the file
            raise DataError(
                f"{target}: MD5 {digest.hexdigest()} of the download from {url} is not the "
                f"official {expected}; the partial file was deleted, run --download {name} again"
            )
    return target


def _missing_npz(npz_path: Path) -> str:
    """One line for a missing file: how to download it, or how to use a copy the user has."""
    if npz_path.suffix == ".npz" and npz_path.stem in MEDMNIST_MD5:
        command = f"python -m src.data.medmnist --download {npz_path.stem}"
        if npz_path.parent.resolve() != NPZ_DIR.resolve():
            command += f" --npz-dir {npz_path.parent}"
    else:
        command = "python -m src.data.medmnist --download NAME (NAME: e.g. pneumoniamnist)"
    return (
        f"{npz_path}: file not found; download it with {command}, or use a copy you already have "
        "with --set data.medmnist_npz=PATH"
    )


def _load_arrays(npz_path: Path) -> dict[str, np.ndarray]:
    """The six arrays of a MedMNIST file, checked for presence, dtype, rank and counts."""
    if not npz_path.is_file():
        raise DataError(_missing_npz(npz_path))
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
        write_csv(tmp / "labels.csv", rows, ["image", *columns, "split"])
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
    ap.add_argument("npz", nargs="?", help="a MedMNIST .npz file to import (needs --out)")
    ap.add_argument("--out", help="new or empty folder for images/ and labels.csv")
    ap.add_argument(
        "--download",
        metavar="NAME",
        help="fetch the official NAME.npz (e.g. pneumoniamnist, adrenalmnist3d_64), check its MD5",
    )
    ap.add_argument(
        "--npz-dir", default=str(NPZ_DIR), help=f"folder for --download (default: {NPZ_DIR})"
    )
    args = ap.parse_args(argv)
    if (args.npz is None) == (args.download is None):
        ap.error("give either a .npz file to import (with --out) or --download NAME")
    if args.npz is not None and args.out is None:
        ap.error("--out is required to import a .npz file")
    try:
        if args.download is not None:
            path = download_medmnist(args.download, args.npz_dir, sys.stderr.isatty())
            print(f"MedMNIST file ready: {path} (official MD5)")
        else:
            csv_path = import_medmnist(args.npz, args.out, sys.stderr.isatty())
            print(f"MedMNIST imported: {csv_path}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
