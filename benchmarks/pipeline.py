"""Does the data pipeline keep the model busy? This trainer's data path against MONAI's plain loop.

On phantom CT volumes of realistic raw size (default 256x256x128 int16, anisotropic spacing),
resampled to ``--spacing`` and resized to the model input (``--size``, 96^3 by default), one run
trains the same model for the same epochs under each setting, each in its own process:

- A  MONAI tutorial loop: plain ``Dataset`` of LoadImage / EnsureChannelFirst / Orientation /
     Spacing / ScaleIntensityRange / Resize and a ``DataLoader``, no cache, no augmentation;
- B  this trainer's data path, ``data.cache: none``;
- C  ``disk``: cold (empty cache, the first epoch fills it) and warm (a new process);
- D  ``ram``;  E ``disk+ram`` (the RAM cache filled from C's warm disk cache);
- D-f32  ``ram`` with float32 storage (what the compact cache is compared with);
- F  the model step alone on batches already in memory: the limit.

B to E store ``--cache-dtype`` (float16 by default) and run this trainer's augmentation; all
settings use the same loader workers and torch threads (``train.*`` automatic values unless
``--workers`` is given). Reported per setting: cache fill time, the last epoch's time, volumes
per second, the fraction of that epoch spent waiting for data, each process's peak RSS (main
process; workers, whose RSS counts pages shared with the main process), the disk cache's size
on disk and the RAM cache's size measured twice: the bytes of the tensor storages it holds, and
how much the process's RSS falls when the cache is released (after ``malloc_trim``).

    python -m benchmarks.pipeline --count 32 --size 96 --model small
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    LoadImaged,
    Orientationd,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
)

from src.config import config_from_dict
from src.data.loader_settings import available_cores, resolve_loader_settings
from src.data.loaders import build_dataset, cache_folder
from src.data.phantom import FINDINGS, generate_phantom_ct
from src.data.records import read_records
from src.data.stream import EpochStream
from src.models import create_model
from src.training.devices import resolve_device
from src.training.loop import train_epoch
from src.training.state import TrainingState
from src.training.tasks import build_task

# name: (kind, data.cache, storage dtype ("" = --cache-dtype), epochs ("n" = --epochs), text).
# Uncached epochs all cost the same and a cold cache is cold only once: those run one epoch.
SETTINGS = {
    "A": ("tutorial", "none", "float32", "1", "MONAI tutorial loop, no cache"),
    "B": ("trainer", "none", "float32", "1", "trainer, cache none"),
    "C-cold": ("trainer", "disk", "", "1", "trainer, disk cache, cold (fills it)"),
    "C-warm": ("trainer", "disk", "", "n", "trainer, disk cache, warm"),
    "D": ("trainer", "ram", "", "n", "trainer, RAM cache"),
    "E": ("trainer", "disk+ram", "", "n", "trainer, disk+RAM cache"),
    "D-f32": ("trainer", "ram", "float32", "1", "trainer, RAM cache, float32 storage"),
    "F": ("model", "none", "float32", "n", "model step alone (the limit)"),
}
MODELS = {
    "small": ("resnet3d", {"depth": 10, "widths": [16, 32, 64, 128], "conv1_kernel": 3}),
    "resnet18": ("resnet3d", {"depth": 18}),
    "densenet121": ("densenet3d", {"depth": 121}),
}
MB = 2**20


def bench_config(spec: dict[str, Any], cache: str, dtype: str):
    """The trainer config of one setting (phantom data, model, loader settings)."""
    name, params = MODELS[spec["model"]]
    return config_from_dict(
        {
            "data": {
                "csv": str(Path(spec["data_dir"]) / "labels.csv"),
                "image_root": spec["data_dir"],
                "label_columns": list(FINDINGS),
                "spacing": spec["spacing"],
                "spatial_size": [spec["size"]] * 3,
                "resize_mode": "resize",
                "cache": cache,
                "cache_dir": spec["cache_dir"],
                "cache_dtype": dtype or spec["cache_dtype"],
            },
            "model": {"name": name, "params": params},
            "train": {"batch_size": spec["batch_size"], "num_workers": spec["workers"]},
        }
    )


class TimedLoader:
    """Iterates a loader and adds up the time spent waiting for each batch (worker start and
    the first batch included)."""

    def __init__(self, loader) -> None:
        self.loader, self.wait, self.first_wait, self.volumes = loader, 0.0, 0.0, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        start = time.perf_counter()
        for batch in self.loader:
            self.wait += time.perf_counter() - start
            self.first_wait = self.first_wait or self.wait
            self.volumes += len(batch["image"])
            yield batch
            start = time.perf_counter()


def current_rss() -> int:
    """Resident bytes now, after returning freed heap pages to the OS."""
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cached_tensor_bytes(dataset) -> int:
    """Bytes of the tensor storages a MONAI CacheDataset under ``dataset`` holds (0: none)."""
    cache = getattr(getattr(dataset, "data", None), "_cache", None) or []
    storages = {}
    for item in cache:
        for value in item.values() if isinstance(item, dict) else []:
            if isinstance(value, torch.Tensor):
                storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(storages.values())


def tutorial_loader(records, cfg, workers: int):
    """MONAI's 3D classification tutorial: plain Dataset and DataLoader, no cache."""
    d = cfg.data
    transforms = Compose(
        [
            LoadImaged(keys="image", ensure_channel_first=True),
            Orientationd(keys="image", axcodes="RAS"),
            Spacingd(keys="image", pixdim=d.spacing, mode="bilinear"),
            ScaleIntensityRanged("image", d.intensity_min, d.intensity_max, 0.0, 1.0, clip=True),
            Resized(keys="image", spatial_size=d.spatial_size),
        ]
    )
    items = [{"image": r["image"], "label": torch.as_tensor(r["label"])} for r in records]
    return None, DataLoader(
        Dataset(items, transforms),
        batch_size=cfg.train.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
    )


def memory_batches(records, cfg) -> list[dict[str, torch.Tensor]]:
    """Batches already in memory, as the model sees them: what the model step alone runs on."""
    gen = torch.Generator().manual_seed(0)
    b, n = cfg.train.batch_size, len(records)
    return [
        {
            "image": torch.rand(min(b, n - i), 1, *cfg.data.spatial_size, generator=gen),
            "label": torch.stack([torch.as_tensor(r["label"]) for r in records[i : i + b]]),
        }
        for i in range(0, n, b)
    ]


def run_setting(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Train one setting's epochs (see ``SETTINGS``) in this process and measure them."""
    kind, cache, dtype, n_epochs, _ = SETTINGS[name]
    cfg = bench_config(spec, cache, dtype)
    loading = resolve_loader_settings(cfg)
    torch.set_num_threads(loading.threads)
    torch.manual_seed(0)
    device = resolve_device(cfg.train.device)
    task = build_task(cfg)
    records = read_records(cfg, task)[: spec["count"]]
    model_name, params = MODELS[spec["model"]]
    model = create_model(
        model_name, 3, cfg.in_channels, task.num_outputs, cfg.data.spatial_size, **params
    )
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    state = TrainingState(cfg, model, optimizer, constant, scaler, device)
    if name == "C-cold":
        shutil.rmtree(cache_folder(cfg), ignore_errors=True)
    n_epochs = spec["epochs"] if n_epochs == "n" else 1
    t0 = time.perf_counter()
    dataset, stream, loader = None, None, None
    if kind == "tutorial":
        dataset, loader = tutorial_loader(records, cfg, loading.num_workers)
    elif kind == "model":
        loader = memory_batches(records, cfg)
    else:  # the trainer's path: one loader stream over all epochs (src.data.stream)
        dataset = build_dataset(records, cfg, train=True, progress=False)
        stream = EpochStream(dataset, cfg, lambda epoch: epoch, 0, n_epochs)
    fill_s = time.perf_counter() - t0
    epochs = []
    for epoch in range(n_epochs):
        timed = TimedLoader(stream.epoch(epoch) if stream else loader)
        t0 = time.perf_counter()
        train_epoch(state, timed, task)
        seconds = time.perf_counter() - t0
        epochs.append(
            {
                "epoch_s": seconds,
                "wait_s": timed.wait,
                "first_batch_wait_s": timed.first_wait,
                "volumes": timed.volumes,
            }
        )
    ram_tensors = cached_tensor_bytes(dataset)
    if stream:
        stream.close()
    del loader, timed, stream
    gc.collect()  # shuts persistent workers down, so their peak RSS is counted below
    held = current_rss()
    del dataset  # what RSS gives back when the cache goes: the RAM the cache held
    ram_rss = held - current_rss()
    folder = cache_folder(cfg)
    disk = sum(p.stat().st_size for p in folder.glob("*")) if "disk" in cache else 0
    last = epochs[-1]
    return {
        "setting": name,
        "loader": loading.describe(),
        "cache_fill_s": fill_s if "ram" in cache else 0.0,
        "epochs": epochs,
        "epoch_s": last["epoch_s"],
        "volumes_per_s": last["volumes"] / last["epoch_s"],
        "data_wait_fraction": last["wait_s"] / last["epoch_s"],
        "first_batch_wait_fraction": last["first_batch_wait_s"] / last["epoch_s"],
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB,
        "peak_rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / MB,
        "disk_cache_mb": disk / MB,
        "ram_cache_tensor_mb": ram_tensors / MB,
        "ram_cache_rss_mb": ram_rss / MB if "ram" in cache else 0.0,
    }


def ensure_volumes(spec: dict[str, Any]) -> dict[str, Any]:
    """Phantom CT volumes of the raw matrix size (generated once, reused); their description."""
    root = Path(spec["data_dir"])
    if not (root / "labels.csv").is_file():
        print(f"writing {spec['count']}+ phantom volumes of {spec['raw']} to {root} ...")
        generate_phantom_ct(root, spec["count"], seed=0, progress=True, matrix=spec["raw"])
    img = nib.load(sorted((root / "images").glob("*.nii.gz"))[0])
    return {
        "shape": list(img.shape),
        "dtype": str(img.get_data_dtype()),
        "spacing_mm": [round(float(z), 2) for z in img.header.get_zooms()],
        "file_mb": round(os.path.getsize(img.get_filename()) / MB, 1),
    }


def run_all(spec: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """Each setting in its own process (its own peak RSS, no cache or allocator carried over)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        for name in names:
            out = Path(tmp) / f"{name}.json"
            print(f"[{name}] {SETTINGS[name][4]} ...", flush=True)
            cmd = [sys.executable, "-m", "benchmarks.pipeline", "--child", name]
            subprocess.run([*cmd, "--spec", str(spec_path), "--result", str(out)], check=True)
            results[name] = json.loads(out.read_text())
            r = results[name]
            print(f"[{name}] epoch {r['epoch_s']:.1f}s  wait {r['data_wait_fraction']:.0%}")
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table with ratios to A (speed-up) and F (fraction of the model-only limit)."""
    a, f = results.get("A"), results.get("F")
    head = (
        "| setting | what | cache fill s | epoch s | volumes/s | data wait (1st batch) | x A |"
        " of limit F |"
        " peak RSS main / workers MB | disk cache MB | RAM cache MB (tensors / RSS freed) |"
    )
    lines = [head, "|" + "---|" * 11]
    for name, r in results.items():
        speed = f"{a['epoch_s'] / r['epoch_s']:.1f}x" if a else "-"
        limit = f"{f['epoch_s'] / r['epoch_s']:.0%}" if f else "-"
        ram = (
            f"{r['ram_cache_tensor_mb']:.0f} / {r['ram_cache_rss_mb']:.0f}"
            if r["ram_cache_tensor_mb"]
            else "-"
        )
        lines.append(
            f"| {name} | {SETTINGS[name][4]} | {r['cache_fill_s']:.1f} | {r['epoch_s']:.1f} | "
            f"{r['volumes_per_s']:.2f} | {r['data_wait_fraction']:.1%} "
            f"({r['first_batch_wait_fraction']:.1%}) | {speed} | {limit} | "
            f"{r['peak_rss_main_mb']:.0f} / {r['peak_rss_workers_mb']:.0f} | "
            f"{r['disk_cache_mb']:.0f} | {ram} |"
        )
    return "\n".join(lines)


def checks(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's acceptance figures, where this run measured them."""
    out: dict[str, Any] = {}
    if "A" in results:
        for name in ("D", "E"):
            if name in results:
                r = results[name]
                out[f"{name}_speedup_vs_A"] = results["A"]["epoch_s"] / r["epoch_s"]
                out[f"{name}_data_wait_fraction"] = r["data_wait_fraction"]
    if "B" in results and "C-cold" in results:
        out["C_cold_over_B"] = results["C-cold"]["epoch_s"] / results["B"]["epoch_s"]
    if "D" in results and "D-f32" in results and results["D-f32"]["ram_cache_tensor_mb"]:
        d, d32 = results["D"], results["D-f32"]
        out["ram_cache_over_float32_tensors"] = (
            d["ram_cache_tensor_mb"] / d32["ram_cache_tensor_mb"]
        )
        if d32["ram_cache_rss_mb"] > 0:
            out["ram_cache_over_float32_rss"] = d["ram_cache_rss_mb"] / d32["ram_cache_rss_mb"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96, help="model input edge (voxels)")
    ap.add_argument("--raw", type=int, nargs=3, default=[256, 256, 128], help="raw matrix")
    ap.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0], help="mm")
    ap.add_argument("--count", type=int, default=32, help="volumes per epoch")
    ap.add_argument("--model", choices=sorted(MODELS), default="small")
    ap.add_argument("--workers", type=int, default=-1, help="loader workers (-1: automatic)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2, help="per setting; the last is reported")
    ap.add_argument("--cache-dtype", choices=["float16", "float32"], default="float16")
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--data-dir", default="", help="default: outputs/benchmarks/phantom_<raw>")
    ap.add_argument("--out", default="outputs/benchmarks/pipeline.json")
    ap.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        result = run_setting(args.child, json.loads(Path(args.spec).read_text()))
        Path(args.result).write_text(json.dumps(result))
        return result
    raw = "x".join(map(str, args.raw))
    spec = {
        "size": args.size,
        "raw": args.raw,
        "spacing": args.spacing,
        "count": args.count,
        "model": args.model,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "cache_dtype": args.cache_dtype,
        "data_dir": args.data_dir or f"outputs/benchmarks/phantom_{raw}_n{args.count}",
        "cache_dir": "outputs/benchmarks/cache",
    }
    volumes = ensure_volumes(spec)
    t0 = time.perf_counter()
    results = run_all(spec, args.settings)
    report = {
        "command": "python -m benchmarks.pipeline " + " ".join(argv or sys.argv[1:]),
        "spec": spec,
        "raw_volumes": volumes,
        "cores": available_cores(),
        "load_average_1min": os.getloadavg()[0],
        "wall_s": time.perf_counter() - t0,
        "results": results,
        "checks": checks(results),
    }
    print("\n" + table(results))
    print("\n" + "\n".join(f"{k}: {v:.3f}" for k, v in report["checks"].items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"written: {args.out}  ({report['wall_s']:.0f}s, load average {os.getloadavg()[0]:.1f})")
    return report


if __name__ == "__main__":
    main()
