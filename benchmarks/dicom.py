"""What DICOM input and window channels cost: reading, filling the cache, a cached epoch.

Writes the phantom CT twice into a temporary folder, as ``.nii.gz`` files and as DICOM series
folders (``--format dicom``: the same voxels), and measures on ``configs/ct_dicom.yaml``'s
preprocessing (three windows, float16 cache):

1. one scan read (``LoadImage`` alone, and the whole fixed preprocessing), DICOM series vs
   ``.nii.gz``: the median of ``--repeats`` reads of the first scan;
2. per format, the disk cache filled (first epoch: read, preprocess, write) and a cached epoch
   (every entry read back and cast to the model's float32), over every scan;
3. the cache of the window channels (what ``build_preprocessing`` stores: one channel per
   window) against the HU volume cached once and windowed every epoch after the cache: size of
   the cache and time of a cached epoch.

Single process, one torch thread (``num_workers: 0``), so that the figures compare the formats
and not the scheduling.

    python -m benchmarks.dicom --n-patients 20 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from monai.data import Dataset
from monai.transforms import Compose, LoadImage

from src.config import Config, load_config
from src.data.dicom import DicomSeriesReader
from src.data.disk_cache import CheckedPersistentDataset
from src.data.loaders import build_dataset, cache_folder, item_hash, to_items
from src.data.phantom import generate_phantom_ct
from src.data.records import read_records
from src.data.transforms import WindowChannelsd, build_augmentation, build_preprocessing
from src.files import atomic_write
from src.training.tasks import build_task


def _config(root: Path, cache: Path) -> Config:
    sets = [f"data.csv={root / 'labels.csv'}", f"data.image_root={root}", "data.cache=disk"]
    sets += [
        f"data.cache_dir={cache}",
        "data.phantom.kind=none",
        "data.phantom.format=nifti",
        "train.num_workers=0",
    ]
    return load_config("configs/ct_dicom.yaml", sets)


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _epoch(dataset: Dataset, after=None) -> float:
    t = time.perf_counter()
    for i in range(len(dataset)):
        item = dataset[i]
        if after is not None:
            after(item)
    return time.perf_counter() - t


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.pt")) / 2**20


def read_times(cfg: Config, nifti: str, series: str, repeats: int) -> dict[str, float]:
    load_nifti = LoadImage(image_only=True)
    load_dicom = LoadImage(image_only=True, reader=DicomSeriesReader())
    pre = build_preprocessing(cfg)
    return {
        "load_nifti_s": _median_seconds(lambda: load_nifti(nifti), repeats),
        "load_dicom_s": _median_seconds(lambda: load_dicom(series), repeats),
        "preprocess_nifti_s": _median_seconds(lambda: pre({"image": nifti}), repeats),
        "preprocess_dicom_s": _median_seconds(lambda: pre({"image": series}), repeats),
    }


def cache_epochs(cfg: Config, records: list[dict[str, Any]]) -> dict[str, float]:
    """First epoch (fills the disk cache) and a cached epoch, through the trainer's dataset."""
    shutil.rmtree(cache_folder(cfg), ignore_errors=True)
    fill = _epoch(build_dataset(records, cfg, train=False, progress=False))
    cached = _epoch(build_dataset(records, cfg, train=False, progress=False))
    return {"fill_s": fill, "cached_epoch_s": cached, "cache_mb": _folder_mb(cache_folder(cfg))}


def hu_once_epochs(cfg: Config, records: list[dict[str, Any]], folder: Path) -> dict[str, float]:
    """The alternative layout: HU cached once (same dtype), the windows applied each epoch."""
    steps = [t for t in build_preprocessing(cfg).transforms if not isinstance(t, WindowChannelsd)]
    windows = Compose([WindowChannelsd(keys="image", windows=cfg.windows), *steps[-1:]])
    cast = build_augmentation(cfg, train=False)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    items = to_items(records)
    fill = _epoch(CheckedPersistentDataset(items, Compose(steps), folder, hash_func=item_hash))
    dataset = CheckedPersistentDataset(items, Compose(steps), folder, hash_func=item_hash)
    cached = _epoch(dataset, after=lambda item: cast(windows(item)))
    return {"fill_s": fill, "cached_epoch_s": cached, "cache_mb": _folder_mb(folder)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-patients", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="", help="JSON of the figures (default: stdout only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots = {"nifti": tmp / "nifti", "dicom": tmp / "dicom"}
        for fmt, root in roots.items():
            generate_phantom_ct(root, args.n_patients, seed=0, progress=False, fmt=fmt)
        cfgs = {fmt: _config(root, tmp / f"cache-{fmt}") for fmt, root in roots.items()}
        task = build_task(cfgs["dicom"])
        records = {fmt: read_records(cfgs[fmt], task) for fmt in roots}
        first = {fmt: records[fmt][0]["image"] for fmt in roots}
        result: dict[str, Any] = {"n_scans": len(records["dicom"])}
        result["slices_first_scan"] = len(list(Path(first["dicom"]).iterdir()))
        result["read"] = read_times(cfgs["dicom"], first["nifti"], first["dicom"], args.repeats)
        for fmt in roots:
            result[f"epochs_{fmt}"] = cache_epochs(cfgs[fmt], records[fmt])
        cfg = cfgs["nifti"]
        result["windows_cached"] = result["epochs_nifti"]
        result["hu_once"] = hu_once_epochs(cfg, records["nifti"], tmp / "cache-hu")
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with atomic_write(args.out) as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
