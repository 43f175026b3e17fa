"""MedMNIST benchmark: this pipeline's test AUC / ACC next to the published MedMNIST v2 rows.

    python -m benchmarks.medmnist --config configs/adrenalmnist3d.yaml --seeds 3 [--members 10]

Each model trains with ``src.training.trainer.fit`` on the official ``train`` split in a fresh
process (so its peak memory is its own), picks ``best.pt`` on ``val`` only, and predicts the
``test`` split once with that checkpoint, plain and with flip test-time augmentation (the mean
logit over the image and every combination of flips along ``data.augment.flip_axes``, as
``src.evaluate --tta`` does; no flips, so the TTA rows equal the plain ones, when training did
not flip). With ``--members K`` each seed ``s`` is an ensemble of K models (``train.seed`` s,
s+1000, s+2000, ...; mean logit) and its training time is the sum of its members'. Reported
apart: single models (mean and sample sd over every model), the per-seed ensembles (mean and
sample sd over seeds), the ensemble of every model, each plain and with flip TTA. ACC is at
probability 0.5 for binary tasks, as MedMNIST reports it.
Writes ``<out>.md`` and ``<out>.json`` (default ``outputs/benchmarks/medmnist``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.config import Config, add_override_argument, load_config
from src.data.builtin import ensure_builtin_data
from src.data.loaders import evaluation_loader
from src.data.splits import run_splits
from src.inference.runtime import load_run
from src.training.loop import predict
from src.training.tasks import build_task
from src.training.trainer import USER_ERRORS, fit

REFERENCE = Path(__file__).with_name("medmnist_v2_published.md")  # the published tables


def member_seed(seed: int, member: int) -> int:
    """``train.seed`` of member ``member`` of seed ``seed``'s ensemble (member 0: the seed)."""
    return seed + 1000 * member


def run_seed(
    config: str, overrides: list[str], seed: int, run_dir: str, member: int = 0
) -> dict[str, Any]:
    """Train one model, then predict the test split with its best checkpoint (child process)."""
    train_seed = member_seed(seed, member)
    cfg = load_config(config, [*overrides, f"train.seed={train_seed}", "train.eval_test=false"])
    t0 = time.perf_counter()
    summary = fit(cfg, Path(run_dir))
    train_s = time.perf_counter() - t0
    logits, tta_logits, labels = predict_test(Path(run_dir))
    return {
        "seed": seed,
        "member": member,
        "train_seed": train_seed,
        "run_dir": run_dir,
        "train_s": train_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "best_epoch": summary["best_epoch"],
        "best_val": summary[f"best_{cfg.train.monitor}"],
        "logits": logits.tolist(),
        "tta_logits": tta_logits.tolist(),
        "labels": labels.tolist(),
    }


def predict_test(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Test logits of the best checkpoint (picked on val), without and with the test-time
    flips training used (the one prediction path, ``src.training.loop.predict``), and labels."""
    run = load_run(run_dir, "best")  # the run's best checkpoint, strategy-named or not
    loader = evaluation_loader(run_splits(run.cfg, run_dir, run.task)["test"], run.cfg)
    plain = predict(run.model, loader, run.task, run.flips(False), run.device)
    flipped = predict(run.model, loader, run.task, run.flips(True), run.device)
    return plain.logits, flipped.logits, plain.labels


def published_rows(reference: Path, dataset: str) -> list[tuple[str, float, float]]:
    """(method, AUC, ACC) of ``dataset``'s column in the published markdown tables."""
    if not reference.is_file():
        return []
    rows, col = [], None
    for line in reference.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            col = None
        elif cells[0] == "method":
            names = [re.sub(r"\s*\(.*\)", "", c).lower() for c in cells]
            col = names.index(dataset) if dataset in names else None
        elif col is not None and "/" in cells[col]:
            auc, acc = (float(v) for v in cells[col].split("/"))
            rows.append((cells[0], auc, acc))
    return rows


def sample_sd(values: list[float]) -> float:
    """Standard deviation over seeds (ddof 1; 0 for a single value)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(cfg: Config, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Test AUC / ACC, plain and with flip TTA: single models (mean and sample sd over every model),
    each seed's ensemble of its members (mean and sample sd over seeds; only with members > 1), and
    the ensemble of every model."""
    task = build_task(cfg)
    labels = np.asarray(results[0]["labels"])
    keys = ("roc_auc_macro", "accuracy")

    def metrics(logit_lists: list) -> dict[str, float]:
        mean = torch.stack([torch.tensor(x) for x in logit_lists]).mean(0)
        m = task.metrics(task.probabilities(mean), labels)
        return {k: float(m[k]) for k in keys}

    def spread(values: list[dict[str, float]]) -> dict[str, Any]:
        return {
            k: [float(np.mean([v[k] for v in values])), sample_sd([v[k] for v in values])]
            for k in keys
        } | {"each": values}

    seeds = sorted({r["seed"] for r in results})
    members = max(r["member"] for r in results) + 1
    out: dict[str, Any] = {"seeds": len(seeds), "members": members}
    for kind, suffix in (("logits", ""), ("tta_logits", "_tta")):
        out["single" + suffix] = spread([metrics([r[kind]]) for r in results])
        if members > 1:
            out["seed_ensemble" + suffix] = spread(
                [metrics([r[kind] for r in results if r["seed"] == s]) for s in seeds]
            )
        out["ensemble" + suffix] = metrics([r[kind] for r in results])
    return out


def markdown(
    cfg: Config, name: str, res: dict[str, Any], runs: list[dict], published, jobs: int
) -> str:
    n, k = res["seeds"], res["members"]
    per_seed = [sum(r["train_s"] for r in runs if r["seed"] == s) / 60 for s in range(n)]
    t = np.array(per_seed)
    mem = max(r["peak_rss_mb"] for r in runs)
    model = f"{cfg.model.name} {cfg.model.params}"
    each = f" ({k} models per seed, trained one after another)" if k > 1 else ""
    lines = [
        f"## {name} {'x'.join(map(str, cfg.data.spatial_size))}: test split",
        "",
        f"This pipeline: `{model}`, {cfg.train.epochs} epochs, best checkpoint on val "
        f"(`{cfg.train.monitor}`); {n} seeds{each}, {jobs} model(s) at a time, "
        f"{cfg.train.threads or 'all'} torch thread(s) each; {os.cpu_count()} CPU cores, "
        f"training {t.mean():.1f} ± {sample_sd(per_seed):.1f} min per seed (max {t.max():.1f}), "
        f"peak memory {mem:.0f} MB per model process.",
        "",
        "| method | test AUC | test ACC |",
        "|---|---|---|",
    ]
    rows = [
        ("single", f"single model (mean ± sd, {n * k} models)"),
        ("single_tta", f"single model + flip TTA (mean ± sd, {n * k} models)"),
    ]
    if k > 1:
        rows += [
            ("seed_ensemble", f"{k}-model ensemble per seed (mean ± sd, {n} seeds)"),
            (
                "seed_ensemble_tta",
                f"{k}-model ensemble per seed + flip TTA (mean ± sd, {n} seeds)",
            ),
        ]
    for tag, label in rows:
        auc, acc = res[tag]["roc_auc_macro"], res[tag]["accuracy"]
        lines.append(
            f"| **this pipeline, {label}** | "
            f"**{auc[0]:.3f} ± {auc[1]:.3f}** | **{acc[0]:.3f} ± {acc[1]:.3f}** |"
        )
    for tag, label in [
        ("ensemble", f"ensemble of all {n * k} models"),
        ("ensemble_tta", f"ensemble of all {n * k} models + flip TTA"),
    ]:
        r = res[tag]
        lines.append(
            f"| **this pipeline, {label}** | **{r['roc_auc_macro']:.3f}** | "
            f"**{r['accuracy']:.3f}** |"
        )
    lines += [f"| {m} (published) | {auc:.3f} | {acc:.3f} |" for m, auc, acc in published]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.medmnist", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument(
        "--members", type=int, default=1, help="models per seed, ensembled (train.seed s+1000m)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="models trained at the same time")
    add_override_argument(ap, "train.epochs=20")
    ap.add_argument(
        "--out", default="outputs/benchmarks/medmnist", help="writes OUT.md and OUT.json"
    )
    ap.add_argument("--reference", default=str(REFERENCE))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        name = Path(cfg.data.medmnist_npz or cfg.data.image_root).stem
        run_root = Path(cfg.logging.output_dir) / f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        ensure_builtin_data(cfg)  # import once, before seeds run side by side
        # A fresh process per seed: its peak memory is its own and nothing leaks between seeds.
        # --jobs > 1 trains seeds side by side (each with train.threads torch threads).
        pool = ProcessPoolExecutor(args.jobs, get_context("spawn"), max_tasks_per_child=1)
        with pool:
            futures = [
                pool.submit(
                    run_seed, args.config, args.set, seed, str(run_root / f"seed{seed}{tag}"), m
                )
                for seed in range(args.seeds)
                for m, tag in (
                    (m, f"-m{m}" if args.members > 1 else "") for m in range(args.members)
                )
            ]
            runs = [f.result() for f in futures]
        for r in runs:
            print(
                f"seed {r['seed']} member {r['member']} (train.seed {r['train_seed']}): "
                f"trained in {r['train_s'] / 60:.1f} min",
                flush=True,
            )
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    res = summarise(cfg, runs)
    published = published_rows(Path(args.reference), name.split("_")[0].lower())
    text = markdown(cfg, name, res, runs, published, args.jobs)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    meta = {
        "config": args.config,
        "overrides": args.set,
        "dataset": name,
        "cpu_count": os.cpu_count(),
        "jobs": args.jobs,
        "members": args.members,
        "load_average_end": os.getloadavg(),
        "results": res,
        "runs": [{k: v for k, v in r.items() if "logits" not in k and k != "labels"} for r in runs],
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
