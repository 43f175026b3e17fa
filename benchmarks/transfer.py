"""Transfer benchmark: does a backbone pretrained on a large cohort help a small one?

    python -m benchmarks.transfer [--pretrain-epochs 20] [--epochs 30] [--seeds 0 1 2]

1. Pretrain ``configs/ct.yaml`` (its 300-patient phantom CT, seed 0) for ``--pretrain-epochs``.
2. A small cohort: a ``--patients``-patient phantom drawn with another seed (1), split into
   train / val by patient (``--val-fraction``); its test split is an independent phantom of
   ``--test-patients`` patients (seed 2, ``data.test_csv``), large enough that test AUC is not
   decided by a handful of scans.
3. For every seed in ``--seeds``: fine-tune from the pretrained run (``model.pretrained``,
   ``optim.backbone_lr_scale``) and train from scratch, with the same epochs, seed and config.

Reported per arm: the best validation macro AUC (the checkpoint kept) and the macro AUC of that
checkpoint on the test phantom, per seed and as mean and sample sd. Writes ``<out>/transfer.json``
and prints a Markdown table (default ``--out outputs/benchmarks/transfer``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from src.config import Config, load_config
from src.data.phantom import generate_phantom_ct
from src.files import atomic_write, write_csv
from src.inference.runtime import load_run, split_outcomes
from src.training.trainer import fit

COMMON = [
    "logging.wandb.mode=disabled",
    "logging.progress=false",
    "evaluation.gradcam_per_group=0",
]


def small_cohort(args: argparse.Namespace) -> list[str]:
    """Overrides that point ``configs/ct.yaml`` at the small phantom with its test phantom."""
    root = f"{args.data}/phantom_ct_{args.patients}_seed1"
    test = Path(f"{args.data}/phantom_ct_{args.test_patients}_seed2")
    if not (test / "labels.csv").is_file():
        generate_phantom_ct(test, args.test_patients, seed=2, progress=True)
    # both phantoms name their scans and patients alike (P0000_S0, P0000): the test table's
    # ids get the test set's prefix, so no scan or patient seems to be in two splits
    rows = list(csv.DictReader((test / "labels.csv").read_text().splitlines()))
    for row in rows:
        row["image"] = f"{test.name}/{row['image']}"
        row["patient_id"] = f"{test.name}/{row['patient_id']}"
    write_csv(test / "labels_test.csv", rows)
    return [
        f"data.csv={root}/labels.csv",
        f"data.image_root={root}",
        f"data.phantom.n_patients={args.patients}",
        "data.phantom.seed=1",
        f"data.test_csv={test}/labels_test.csv",
        f"data.test_image_root={test.parent}",
        f"data.split.val_fraction={args.val_fraction}",
        f"train.epochs={args.epochs}",
    ]


def train(config: str, overrides: list[str], run_dir: Path) -> tuple[Config, dict[str, Any], float]:
    cfg = load_config(config, [*COMMON, *overrides])
    t0 = time.perf_counter()
    summary = fit(cfg, run_dir)
    return cfg, summary, time.perf_counter() - t0


def test_auc(run_dir: Path) -> float:
    """Macro AUC of the run's best checkpoint (picked on val) on its test split."""
    run = load_run(run_dir, "best")
    outcome = split_outcomes(run, "test")
    return float(run.task.metrics(outcome.probs, outcome.labels)["roc_auc_macro"])


def arm(args: argparse.Namespace, name: str, seed: int, extra: list[str]) -> dict[str, Any]:
    run_dir = Path(args.out) / f"{name}-seed{seed}"
    cfg, summary, seconds = train(
        args.config, [*small_cohort(args), f"train.seed={seed}", *extra], run_dir
    )
    row = {
        "arm": name,
        "seed": seed,
        "val_auc": float(summary[f"best_{cfg.train.monitor}"]),
        "best_epoch": summary["best_epoch"],
        "test_auc": test_auc(run_dir),
        "train_s": seconds,
    }
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict[str, Any]], seeds: list[int]) -> str:
    lines = [
        "| arm | val AUC per seed | val AUC mean ± sd | test AUC per seed | test AUC mean ± sd |",
        "|---|---|---|---|---|",
    ]
    for name in ("fine-tune", "scratch"):
        mine = [next(r for r in rows if r["arm"] == name and r["seed"] == s) for s in seeds]
        cells = [name]
        for key in ("val_auc", "test_auc"):
            v = np.array([r[key] for r in mine])
            sd = v.std(ddof=1) if len(v) > 1 else float("nan")
            cells += [" / ".join(f"{x:.3f}" for x in v), f"{v.mean():.3f} ± {sd:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/ct.yaml")
    ap.add_argument("--out", default="outputs/benchmarks/transfer")
    ap.add_argument("--data", default="data", help="folder of the small and test phantoms")
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=30, help="epochs of each small-cohort run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--test-patients", type=int, default=100)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--backbone-lr-scale", type=float, default=0.1)
    args = ap.parse_args(argv)
    out = Path(args.out)
    pretrained = out / "pretrain"
    t0 = time.perf_counter()
    if not (pretrained / "checkpoints" / "final.pt").is_file():  # a finished pretraining run
        _, summary, _ = train(args.config, [f"train.epochs={args.pretrain_epochs}"], pretrained)
        print(f"pretrained: best val AUC {summary['best_val/roc_auc_macro']:.3f}", flush=True)
    pretrain_s = time.perf_counter() - t0
    scale = args.backbone_lr_scale
    fine_tune = [f"model.pretrained={pretrained}", f"optim.backbone_lr_scale={scale}"]
    rows = []
    for seed in args.seeds:
        rows.append(arm(args, "fine-tune", seed, fine_tune))
        rows.append(arm(args, "scratch", seed, []))
    result = {"args": vars(args), "pretrain_s": pretrain_s, "rows": rows}
    with atomic_write(out / "transfer.json") as fh:
        json.dump(result, fh, indent=1)
    print(table(rows, args.seeds))


if __name__ == "__main__":
    main()
