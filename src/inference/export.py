"""Export a trained run to TorchScript and ONNX (`python -m src.inference.export --run R`).

Each exported file carries the class names, task and activation, the preprocessing settings
(spacing, orientation, intensity windows, input size; one input channel per window) and the
decision thresholds with their rule: TorchScript as the extra file ``metadata.json``, ONNX as
the metadata property ``metadata``. A group or ensemble folder exports as one module whose
logits' activation is the mean of its members' probabilities (``members`` in the metadata lists
their checkpoints). After writing, each file is run on a seeded sample batch and its logits are
compared with PyTorch's; a difference above the tolerance (1e-4) is an error. A run tracked by
W&B gets the files as a new version of its ``model`` artifact.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.data.transforms import preprocessing_settings
from src.inference.runtime import USER_ERRORS, LoadedRun, load_run
from src.reporting.thresholds import load_thresholds, rule_summary, threshold_values
from src.training.loop import predict
from src.training.tracking import reopen_tracker

TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """An exported model whose outputs differ from PyTorch's."""


def export_metadata(run: LoadedRun) -> dict[str, Any]:
    """What a consumer of the exported file needs besides the weights."""
    cfg, thresholds = run.cfg, load_thresholds(run.run_dir)
    return {
        "model": cfg.model.name,
        "task": run.task.kind,
        "class_names": run.task.output_names,
        "activation": run.task.activation,
        "input_shape": [-1, cfg.in_channels, *cfg.data.spatial_size],
        "preprocessing": preprocessing_settings(cfg),
        "thresholds": threshold_values(thresholds),
        "threshold_rule": rule_summary(thresholds) if thresholds else run.task.default_decision,
        "checkpoint": str(run.checkpoint),
        # an ensemble is one module: its logits' activation is the mean of the members'
        # probabilities (src.models.ensemble)
        "members": [str(m.checkpoint) for m in run.members],
    }


def sample_batch(run: LoadedRun, n: int = 2, seed: int = 0) -> torch.Tensor:
    """A seeded batch in the model's input range [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, run.cfg.in_channels, *run.cfg.data.spatial_size), generator=g).to(
        run.device
    )


def export_torchscript(run: LoadedRun, path: Path, meta: dict[str, Any]) -> Path:
    traced = torch.jit.trace(run.model, sample_batch(run), check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"metadata.json": json.dumps(meta)})
    return path


def export_onnx(run: LoadedRun, path: Path, meta: dict[str, Any]) -> Path:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        run.model,
        (sample_batch(run),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "metadata", json.dumps(meta)
    onnx.save(model, str(path))
    return path


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata stored in an exported file (``.onnx`` or TorchScript)."""
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props["metadata"])
    extra = {"metadata.json": ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["metadata.json"])


def exported_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    """Run an exported file on ``x`` (ONNX Runtime or TorchScript) on the CPU."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": x.cpu().numpy()})[0]
    with torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(x.cpu()).numpy()


def check_export(run: LoadedRun, path: Path, n: int = 3) -> float:
    """Max |logit difference| to PyTorch on a seeded batch of ``n`` (another size than traced)."""
    x = sample_batch(run, n, seed=1)
    ref = predict(run.model, [{"image": x}], run.task, device=run.device).logits.numpy()
    diff = float(np.abs(exported_logits(path, x) - ref).max())
    if diff > TOLERANCE:
        raise ExportError(f"{path}: outputs differ from PyTorch by {diff:.2e} > {TOLERANCE:g}")
    return diff


def export_run(run: LoadedRun, formats: list[str], out_dir: Path) -> dict[str, tuple[Path, float]]:
    """Write each format into ``out_dir``; returns {format: (path, max difference)}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = export_metadata(run)
    run.model.cpu()
    run.device = torch.device("cpu")
    done = {}
    for fmt in formats:
        if fmt == "onnx":
            path = export_onnx(run, out_dir / "model.onnx", meta)
        else:
            path = export_torchscript(run, out_dir / "model.torchscript.pt", meta)
        done[fmt] = (path, check_export(run, path))
    return done


def track_export(run: LoadedRun, done: dict[str, tuple[Path, float]]) -> None:
    """The exported files as a version of the run's W&B ``model`` artifact, when the run was
    tracked (its checkpoint holds a W&B run id) and its config still tracks."""
    run_id = run.ckpt.get("wandb_run_id", "")
    tracker = reopen_tracker(run.cfg, run.run_dir, run_id) if run_id else None
    if tracker is None:
        return
    meta = export_metadata(run) | {"max_logit_difference": {f: d for f, (_, d) in done.items()}}
    tracker.log_model({p.name: p for p, _ in done.values()}, ["exported", *done], meta)
    tracker.finish()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.inference.export", description=__doc__)
    ap.add_argument("--run", required=True, help="run, group or ensemble folder")
    ap.add_argument("--format", choices=["onnx", "torchscript", "both"], default="both")
    ap.add_argument("--checkpoint", default="best", help="best, last, final or a checkpoint path")
    ap.add_argument("--out", default="", help="folder to write into (default <run>/export)")
    args = ap.parse_args(argv)
    formats = ["onnx", "torchscript"] if args.format == "both" else [args.format]
    try:
        run = load_run(args.run, args.checkpoint)
        done = export_run(run, formats, Path(args.out) if args.out else run.run_dir / "export")
        track_export(run, done)
    except (*USER_ERRORS, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for fmt, (path, diff) in done.items():
        print(f"{fmt:12s} {path}  max |logit - PyTorch| = {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
