"""Are the phantom findings separable from whole-volume intensity statistics alone?

Fits one logistic regression per finding on per-volume HU statistics (mean, std, percentiles)
of the training split and reports validation/test AUC, on the very split the trainer makes
from the same config. The phantom is meant to defeat this baseline (macro AUC < 0.75) while
the 3D network passes 0.90.

    python -m benchmarks.intensity_baseline --config configs/ct.yaml
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from src.config import load_config
from src.data.builtin import ensure_builtin_data
from src.data.records import read_records
from src.data.splits import make_splits, split_records
from src.training.tasks import build_task

PERCENTILES = [1, 5, 10, 25, 50, 75, 90, 95, 99]


def intensity_features(path: str) -> np.ndarray:
    """Mean, standard deviation and percentiles of a volume's HU values."""
    hu = np.asarray(nib.load(path).get_fdata(dtype=np.float32)).ravel()
    return np.concatenate([[hu.mean(), hu.std()], np.percentile(hu, PERCENTILES)])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/ct.yaml")
    ap.add_argument("--out", default="outputs/benchmarks/intensity_baseline.json")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    ensure_builtin_data(cfg)
    task = build_task(cfg)
    records = read_records(cfg, task)
    parts = split_records(records, make_splits(records, cfg, task))
    feats = {
        name: np.stack([intensity_features(r["image"]) for r in tqdm(recs, desc=name)])
        for name, recs in parts.items()
        if recs
    }
    labels = {name: np.stack([r["label"] for r in recs]) for name, recs in parts.items() if recs}
    result: dict = {"config": args.config, "features": ["mean", "std", *map(str, PERCENTILES)]}
    for split in [s for s in ("val", "test") if s in feats]:
        aucs = {}
        for j, finding in enumerate(cfg.class_names):
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf.fit(feats["train"], labels["train"][:, j])
            y = labels[split][:, j]
            if len(np.unique(y)) == 2:
                aucs[finding] = float(roc_auc_score(y, clf.predict_proba(feats[split])[:, 1]))
        result[split] = {"roc_auc_macro": float(np.mean(list(aucs.values())))} | aucs
        print(
            f"{split}: macro AUC {result[split]['roc_auc_macro']:.3f}  "
            + "  ".join(f"{k} {v:.2f}" for k, v in aucs.items())
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"written: {args.out}")
    return result


if __name__ == "__main__":
    main()
