"""From a labels CSV and an image folder to a written, validated training config.

``plan_dataset`` reads the CSV's columns (labels, patients, centres, split), builds the task,
takes the fingerprint, applies the rules (``src.plan.rules``) and writes the config with each
rule as a comment beside the key it sets, then loads it back through the config loader: a
config the planner writes always validates.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from src.config import Config, ConfigError, config_from_dict, load_config
from src.data.records import DataError, label_matrix, read_records
from src.files import atomic_write
from src.models.registry import check_input_size
from src.plan.budget import GIB, host_memory_gb
from src.plan.fingerprint import fingerprint
from src.plan.rules import Plan, make_plan
from src.training.tasks import build_task, infer_task

# CSV column names (lower case) read as patient, centre and split columns
PATIENT_NAMES = ("patient_id", "patient", "patientid", "subject_id", "subject")
CENTRE_NAMES = ("center", "centre", "site", "hospital", "institution")
SPLIT_NAMES = ("split", "fold_split", "subset")
SECTIONS = ("data", "model", "optim", "train", "logging")


def _find(columns: list[str], names: tuple[str, ...]) -> str:
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in names if n in lower), "")


def data_settings(
    csv_path: str,
    image_root: str,
    image_column: str = "image",
    label_columns: list[str] | None = None,
    task: str = "",
) -> dict[str, Any]:
    """The ``data`` keys read from the CSV itself: columns and task (given or inferred)."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"--csv: file not found: {path}; give the labels CSV")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if image_column not in columns:
        raise DataError(
            f"{path}: no image column {image_column!r}; the CSV has: {', '.join(columns)}; "
            "name it with --image-column"
        )
    patient, centre = _find(columns, PATIENT_NAMES), _find(columns, CENTRE_NAMES)
    split = _find(columns, SPLIT_NAMES)
    if label_columns is None:
        label_columns = [c for c in columns if c not in {image_column, patient, centre, split}]
    missing = [c for c in label_columns if c not in columns]
    if missing or not label_columns:
        raise DataError(
            f"{path}: label column {(missing or [''])[0]!r} not found; the CSV has: "
            f"{', '.join(columns)}; name them with --label-columns"
        )
    kind, classes = infer_task({c: [r.get(c) or "" for r in rows] for c in label_columns})
    return {
        "csv": str(csv_path),
        "image_root": str(image_root),
        "task": task or kind,
        "image_column": image_column,
        "label_columns": label_columns,
        "class_names": classes if not task or task == kind else [],
        "patient_column": patient,
        "center_column": centre,
        "split_column": split,
    }


def _flow(value: Any) -> str:
    """A YAML value on one line (lists and mappings in flow style)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10_000).strip()[1:-1]


def render_config(fixed: dict[str, Any], plan: Plan, header: list[str]) -> str:
    """The YAML text: ``fixed`` (dotted key -> value) and ``plan`` (dotted key -> (value,
    rule)), grouped into sections, each planned key with its rule as a comment."""
    entries = {k: (v, "") for k, v in fixed.items()} | plan
    lines = [f"# {h}" for h in header]
    tree: dict[str, Any] = {}
    for key, (value, rule) in entries.items():
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = (value, rule)

    def emit(node: dict[str, Any], depth: int) -> None:
        for name, item in node.items():
            pad = "  " * depth
            if isinstance(item, dict):
                lines.append(f"{pad}{name}:")
                emit(item, depth + 1)
                continue
            value, rule = item
            text = f"{pad}{name}: {_flow(value)}"
            lines.append(f"{text:<40}  # {rule}" if rule else text)

    for section in SECTIONS:
        if section in tree:
            lines.append(f"{section}:")
            emit(tree[section], 1)
    return "\n".join(lines) + "\n"


def plan_dataset(
    settings: dict[str, Any],
    out: str | Path,
    report_dir: str | Path,
    memory_gb: float | None = None,
    device: str = "cpu",
    sample: int = 32,
    progress: bool = True,
) -> tuple[Config, dict[str, Any], Plan]:
    """Fingerprint the data set ``settings`` (``data_settings``) names, plan it, write the
    config to ``out`` and ``fingerprint.json`` into ``report_dir``; returns the loaded config, the
    fingerprint and the plan."""
    memory_gb = memory_gb or min(16.0, host_memory_gb() / 2)
    base = config_from_dict({"data": settings | {"spatial_size": [1, 1]}})
    task = build_task(base)
    fp = fingerprint(base, task, sample=sample, progress=progress)
    labels = label_matrix(read_records(base, task))
    plan, cost = make_plan(fp, task, labels, memory_gb, device)
    name = Path(out).stem
    fixed = {f"data.{k}": v for k, v in settings.items()}
    fixed |= {
        "data.cache_dir": "outputs/cache",
        "train.device": device if device != "cpu" else "auto",
        "train.monitor": "val/roc_auc_macro",
        "train.monitor_mode": "max",
        "train.seed": 0,
        "optim.weight_decay": 1e-4,
        "optim.scheduler": "cosine",
        "optim.grad_clip": 1.0,
        "logging.output_dir": "outputs",
        "logging.wandb.project": name,
    }
    header = [
        f"Planned by python -m src.plan from {settings['csv']} ({fp['images']} images, "
        f"{fp['dims']}D, {fp['modality']}).",
        f"Fingerprint: {Path(report_dir) / 'fingerprint.json'}; each planned key has its",
        "rule beside it (the rules: src/plan/rules.py). Train it:",
        f"  python -m src.training.trainer --config {out}",
        f"Measured training step: {cost.seconds:.2f} s at batch {cost.batch} on {device}, "
        f"{cost.bytes / GIB:.2f} GiB.",
    ]
    text = render_config(fixed, plan, header)
    raw = yaml.safe_load(text)
    cfg = config_from_dict(raw)  # fail before writing anything that would not load
    params = dict(cfg.model.params)
    check_input_size(cfg.model.name, cfg.spatial_dims, 1, cfg.data.spatial_size, **params)
    with atomic_write(out) as fh:
        fh.write(text)
    with atomic_write(Path(report_dir) / "fingerprint.json") as fh:
        json.dump(fp, fh, indent=1, default=_plain)
    return load_config(out), fp, plan


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


__all__ = ["ConfigError", "data_settings", "plan_dataset", "render_config"]
