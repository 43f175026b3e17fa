"""MedMNIST benchmark: this pipeline's test AUC / ACC next to the published MedMNIST v2 rows.

    python -m benchmarks.medmnist --config configs/adrenalmnist3d.yaml --seeds 3 [--members 10]
    python -m benchmarks.medmnist --config configs/adrenalmnist3d.yaml --seeds 3 --folds 5

Each seed ``s`` trains in a fresh process (so its peak memory is its own) one of:
- ``--members K``: K models (``train.seed`` s, s+1000, ...) on the official ``train`` split, each
  picking ``best.pt`` on ``val``; their ensemble is ``src.inference.runtime.load_run`` of the K
  runs. Training time: the sum of the members'.
- ``--folds K``: a cross-validation group (``src.training.trainer.train_group``): the official
  train and val splits pooled into K patient-grouped, label-stratified folds (``data.split.seed``
  s), the official test split held out of every fold, each fold picking its checkpoint on its own
  validation fold; the ensemble is the group. Training time includes the group's out-of-fold
  evaluation.
Every model and ensemble then predicts the test split once through the one prediction path,
plain and with flip test-time augmentation (``src.evaluate --tta``; no flips when training did
not flip). An ensemble averages its members' probabilities (``Task.combine``). Reported: single
models (mean and sample sd over every model) and the per-seed ensembles (mean and sample sd over
seeds). ACC is at probability 0.5 for binary tasks, as MedMNIST reports it.
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

from src.config import Config, add_override_argument, load_config
from src.data.builtin import ensure_builtin_data
from src.data.loaders import evaluation_loader
from src.data.splits import run_splits
from src.inference.runtime import LoadedRun, load_run
from src.training.loop import predict
from src.training.tasks import build_task
from src.training.trainer import USER_ERRORS, fit, train_group

REFERENCE = Path(__file__).with_name("medmnist_v2_published.md")  # the published tables


def member_seed(seed: int, member: int) -> int:
    """``train.seed`` of member ``member`` of seed ``seed``'s ensemble (member 0: the seed)."""
    return seed + 1000 * member


def train_seed(
    config: str, overrides: list[str], seed: int, run_dir: str, member: int = 0, folds: int = 0
) -> dict[str, Any]:
    """Train one member (or, with ``folds``, one cross-validation group) in a child process."""
    extra = [f"train.seed={member_seed(seed, member)}", "train.eval_test=false"]
    if folds:  # the test split stays unread until the ensemble predicts it
        extra += [f"data.split.seed={seed}", f"data.split.n_folds={folds}"]
    cfg = load_config(config, [*overrides, *extra])
    t0 = time.perf_counter()
    if folds:
        train_group(cfg, Path(run_dir), list(range(folds)), resume=False)
    else:
        fit(cfg, Path(run_dir))
    return {
        "seed": seed,
        "member": member,
        "run_dir": run_dir,
        "train_s": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def test_probabilities(run: LoadedRun, tta: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of the run's test split by its best checkpoint(s), through the
    one prediction path (an ensemble: its members' probabilities averaged)."""
    loader = evaluation_loader(run_splits(run.cfg, run.run_dir, run.task)["test"], run.cfg)
    out = predict(run.model, loader, run.task, run.flips(tta), run.device)
    return out.probabilities, out.labels.numpy()


def seed_outcomes(ensemble: LoadedRun, seed: int) -> dict[str, Any]:
    """Test probabilities of a seed's ensemble and of each of its members, plain and flipped."""
    out: dict[str, Any] = {"seed": seed}
    for suffix, tta in (("", False), ("_tta", True)):
        probs, labels = test_probabilities(ensemble, tta)
        out["ensemble" + suffix] = probs.tolist()
        out["single" + suffix] = [
            test_probabilities(m, tta)[0].tolist() for m in ensemble.members or [ensemble]
        ]
        out["labels"] = labels.tolist()
    return out


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


def summarise(cfg: Config, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Test AUC / ACC, plain and with flip TTA: single models (mean and sample sd over every
    model) and each seed's ensemble (mean and sample sd over seeds)."""
    task = build_task(cfg)
    keys = ("roc_auc_macro", "accuracy")

    def metrics(probs: list, labels: list) -> dict[str, float]:
        m = task.metrics(np.asarray(probs), np.asarray(labels))
        return {k: float(m[k]) for k in keys}

    def spread(values: list[dict[str, float]]) -> dict[str, Any]:
        return {
            k: [float(np.mean([v[k] for v in values])), sample_sd([v[k] for v in values])]
            for k in keys
        } | {"each": values}

    out: dict[str, Any] = {"seeds": len(seeds), "members": len(seeds[0]["single"])}
    for suffix in ("", "_tta"):
        out["single" + suffix] = spread(
            [metrics(p, s["labels"]) for s in seeds for p in s["single" + suffix]]
        )
        out["seed_ensemble" + suffix] = spread(
            [metrics(s["ensemble" + suffix], s["labels"]) for s in seeds]
        )
    return out


def markdown(cfg: Config, name: str, res: dict[str, Any], runs: list[dict], published, args) -> str:
    n, k = res["seeds"], res["members"]
    per_seed = [sum(r["train_s"] for r in runs if r["seed"] == s) / 60 for s in range(n)]
    t = np.array(per_seed)
    mem = max(r["peak_rss_mb"] for r in runs)
    model = f"{cfg.model.name} {cfg.model.params}"
    kind = f"{k}-fold ensemble" if args.folds else f"{k}-model ensemble"
    how = (
        f"{k} folds of the pooled official train + val per seed, each picking its checkpoint on "
        "its own validation fold"
        if args.folds
        else f"{k} model(s) per seed, trained one after another, checkpoint picked on val"
    )
    lines = [
        f"## {name} {'x'.join(map(str, cfg.data.spatial_size))}: test split",
        "",
        f"This pipeline: `{model}`, {cfg.train.epochs} epochs (`{cfg.train.monitor}`); {n} "
        f"seeds, {how}; {args.jobs} seed(s) at a time, {cfg.train.threads or 'all'} torch "
        f"thread(s); {os.cpu_count()} CPU cores, training {t.mean():.1f} ± "
        f"{sample_sd(per_seed):.1f} min per seed (max {t.max():.1f}), peak memory {mem:.0f} MB "
        "per seed's process.",
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
            ("seed_ensemble", f"{kind} per seed (mean ± sd, {n} seeds)"),
            ("seed_ensemble_tta", f"{kind} per seed + flip TTA (mean ± sd, {n} seeds)"),
        ]
    for tag, label in rows:
        auc, acc = res[tag]["roc_auc_macro"], res[tag]["accuracy"]
        lines.append(
            f"| **this pipeline, {label}** | "
            f"**{auc[0]:.3f} ± {auc[1]:.3f}** | **{acc[0]:.3f} ± {acc[1]:.3f}** |"
        )
    lines += [f"| {m} (published) | {auc:.3f} | {acc:.3f} |" for m, auc, acc in published]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.medmnist", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ensemble = ap.add_mutually_exclusive_group()
    ensemble.add_argument(
        "--members", type=int, default=1, help="models per seed, ensembled (train.seed s+1000m)"
    )
    ensemble.add_argument(
        "--folds", type=int, default=0, help="a K-fold group per seed (train + val pooled)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="trainings at the same time")
    add_override_argument(ap, "train.epochs=20")
    ap.add_argument(
        "--out", default="outputs/benchmarks/medmnist", help="writes OUT.md and OUT.json"
    )
    ap.add_argument("--reference", default=str(REFERENCE))
    return ap.parse_args(argv)


def train_all(args: argparse.Namespace, run_root: Path) -> list[dict[str, Any]]:
    """Every seed's members or group, each in a fresh process (its peak memory its own);
    ``--jobs`` > 1 trains side by side."""
    pool = ProcessPoolExecutor(args.jobs, get_context("spawn"), max_tasks_per_child=1)
    with pool:
        if args.folds:
            jobs = [(seed, 0, run_root / f"seed{seed}-cv") for seed in range(args.seeds)]
        else:
            jobs = [
                (seed, m, run_root / f"seed{seed}{f'-m{m}' if args.members > 1 else ''}")
                for seed in range(args.seeds)
                for m in range(args.members)
            ]
        futures = [
            pool.submit(train_seed, args.config, args.set, s, str(d), m, args.folds)
            for s, m, d in jobs
        ]
        runs = [f.result() for f in futures]
    for r in runs:
        print(
            f"seed {r['seed']} {Path(r['run_dir']).name}: {r['train_s'] / 60:.1f} min", flush=True
        )
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        name = Path(cfg.data.medmnist_npz or cfg.data.image_root).stem
        run_root = Path(cfg.logging.output_dir) / f"bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        ensure_builtin_data(cfg)  # import once, before seeds run side by side
        runs = train_all(args, run_root)
        seeds = []
        for seed in range(args.seeds):
            dirs = [r["run_dir"] for r in runs if r["seed"] == seed]
            home = run_root / f"seed{seed}-ensemble"
            seeds.append(
                seed_outcomes(load_run(dirs if len(dirs) > 1 else dirs[0], home=home), seed)
            )
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    res = summarise(cfg, seeds)
    published = published_rows(Path(args.reference), name.split("_")[0].lower())
    text = markdown(cfg, name, res, runs, published, args)
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
        "folds": args.folds,
        "load_average_end": os.getloadavg(),
        "results": res,
        "runs": runs,
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
