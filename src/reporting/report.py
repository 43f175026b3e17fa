"""The run report: ``report.html`` (self-contained: images embedded as base64, no external
links) and ``report.md`` (figures as relative paths) in the run folder; the same figures and
tables, with the predictions table, to W&B (``evaluation_log``).
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from src.data.records import TaskLabels, label_matrix
from src.files import atomic_write
from src.inference.runtime import SplitOutcomes
from src.training.tasks import Task
from src.training.tracking import EvaluationLog, Picture

HEAD_METRICS = (
    "roc_auc_macro",
    "f1_macro",
    "sensitivity_macro",
    "specificity_macro",
    "precision_macro",
    "accuracy",
)
CLASS_METRICS = ("auc", "sensitivity", "specificity", "precision", "f1")
STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}img{max-width:100%;margin:.3em 0}"
    ".fig{display:inline-block;vertical-align:top;margin-right:1em}"
)


def split_statistics(
    parts: dict[str, list[dict[str, Any]]], task: TaskLabels
) -> list[dict[str, Any]]:
    """Rows of (split, centre): scans, patients, the task's label counts and, where labels are
    incomplete, the ignored (unknown) cells per class."""
    rows = []
    incomplete = any(
        any(task.ignored_counts(label_matrix(recs)).values()) for recs in parts.values() if recs
    )
    for split, records in parts.items():
        centres = sorted({r["center"] for r in records})
        for centre in [*centres, "all"] if len(centres) > 1 else ["all"]:
            recs = [r for r in records if centre == "all" or r["center"] == centre]
            if not recs:
                continue
            row = {
                "split": split,
                "centre": centre or "-",
                "scans": len(recs),
                "patients": len({r["patient"] for r in recs}),
            }
            labels = label_matrix(recs)
            row |= task.label_counts(labels)
            if incomplete:
                row |= {f"ignored {n}": c for n, c in task.ignored_counts(labels).items()}
            rows.append(row)
    return rows


def fmt_ci(m: dict[str, float]) -> str:
    if math.isnan(m["value"]):
        return "n/a"
    if math.isnan(m["lo"]):
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def _tables(ctx: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table in the report."""
    cfg, m, names = ctx["config"], ctx["metrics"], ctx["class_names"]
    conf = f"{ctx['bootstrap']['confidence']:.0%}"
    config_rows = [
        ["task", cfg.data.task],
        ["model", f"{cfg.model.name} {cfg.model.params}"],
        ["input", f"{cfg.data.spatial_size} voxels at {cfg.data.spacing or 'native'} mm"],
        ["intensity window", f"[{cfg.data.intensity_min}, {cfg.data.intensity_max}]"],
        [
            "optimiser",
            f"AdamW lr {cfg.optim.lr} wd {cfg.optim.weight_decay}, {cfg.optim.scheduler}",
        ],
        [
            "training",
            f"{cfg.train.epochs} epochs max, batch {cfg.train.batch_size}, "
            f"monitor {cfg.train.monitor}",
        ],
        ["checkpoint", _checkpoint_text(ctx)],
        ["test-time augmentation", "flips" if ctx["tta"] else "none"],
    ]
    split_rows = ctx["split_table"]
    split_header = list(split_rows[0]) if split_rows else []
    default, tuned = m["default"], m["validation_thresholds"]
    head = [[k, fmt_ci(default[k]), fmt_ci(tuned[k])] for k in HEAD_METRICS if k in default]
    per_class = [
        [
            n,
            *(fmt_ci(tuned[f"{k}/{n}"]) for k in CLASS_METRICS),
            _threshold_text(ctx["thresholds"], n),
            f"{ctx['ece'].get(n, float('nan')):.3f}",
        ]
        for n in names
    ]
    return [
        ("Configuration", ["setting", "value"], config_rows),
        *_comparison(ctx, conf),
        (
            "Data: scans, patients and positives per split and centre",
            split_header,
            [[str(r[c]) for c in split_header] for r in split_rows],
        ),
        (
            f"Metrics on the {ctx['split']} split ({ctx['n_scans']} scans, {ctx['n_patients']} "
            f"patients), {conf} CI",
            [
                "metric",
                f"{ctx['decisions']['default']} [{conf} CI]",
                f"validation thresholds [{conf} CI]",
            ],
            head,
        ),
        (
            "Per class, at the validation thresholds",
            ["class", *CLASS_METRICS, "threshold (rule)", "ECE"],
            per_class,
        ),
    ]


def _checkpoint_text(ctx: dict[str, Any]) -> str:
    if not ctx.get("members"):
        return f"{Path(ctx['checkpoint']).name} (epoch {ctx['epoch']})"
    names = ", ".join(Path(m).name for m in ctx["members"])
    return f"ensemble of {len(ctx['members'])} runs ({names}): their probabilities averaged"


def _comparison(ctx: dict[str, Any], conf: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """An ensemble's table: each member, the ensemble and (a group) the out-of-fold
    predictions side by side, at the same thresholds; empty for a single run."""
    if not ctx.get("per_member"):
        return []
    columns = {name: m["validation_thresholds"] for name, m in ctx["per_member"].items()}
    columns["ensemble"] = ctx["metrics"]["validation_thresholds"]
    if ctx.get("out_of_fold"):
        columns["out of fold"] = ctx["out_of_fold"]["metrics"]["validation_thresholds"]
    rows = [
        [k, *(fmt_ci(c[k]) for c in columns.values())]
        for k in HEAD_METRICS
        if k in columns["ensemble"]
    ]
    title = f"Members and ensemble on the {ctx['split']} split at the same thresholds, {conf} CI"
    if ctx.get("out_of_fold"):
        title += " (out of fold: the pool, each scan by the fold that did not train on it)"
    return [(title, ["metric", *columns], rows)]


def _threshold_text(thresholds: dict[str, Any], name: str) -> str:
    c = (thresholds or {}).get("classes", {}).get(name)
    return "arg-max" if c is None else f"{c['threshold']:.3f} ({c['rule']})"


def _notes(ctx: dict[str, Any]) -> list[str]:
    b = ctx["bootstrap"]
    notes = [
        f"Default decision: {ctx['decisions']['default']}. "
        + ctx["decisions"]["validation_thresholds"],
        f"Confidence intervals: percentile bootstrap, {b['replicates']} replicates resampled by "
        f"{b['resampled_by']} (seed {b['seed']}).",
    ]
    if ctx["gallery"]:
        notes.append(
            f"Grad-CAM: {ctx['cam_method']}; three orthogonal slices through the map's peak "
            "for true positives (TP), false positives (FP) and false negatives (FN)."
        )
    return notes


def html_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    """A titled HTML table, every cell escaped."""
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<h2>{html.escape(title)}</h2><table><tr>{cells}</tr>{trs}</table>"


def html_figure(name: str, png: bytes, source: str = "") -> str:
    """A titled PNG embedded as base64 (no file or network reference)."""
    data = base64.b64encode(png).decode()
    tag = f' data-figure="{html.escape(source)}"' if source else ""
    return (
        f'<div class="fig"><h3>{html.escape(name)}</h3><img alt="{html.escape(name)}"{tag} '
        f'src="data:image/png;base64,{data}"></div>'
    )


def html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page: the style inline, ``body`` fragments in order."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def write_report(run_dir: Path, ctx: dict[str, Any]) -> Path:
    """Write ``report.html`` and ``report.md`` into ``run_dir``; returns the HTML path."""
    run_dir = Path(run_dir)
    figures = list(ctx["figures"].items()) + [(p.stem, p) for p in ctx["gallery"]]
    stamp = f"{datetime.now():%Y-%m-%d %H:%M}"
    title = f"Run report: {ctx['run']}"
    md = [f"# {title}", "", f"Written {stamp}.", ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>Written {stamp}.</p>"]
    for note in _notes(ctx):
        md.append(f"- {note}")
        body.append(f"<p>{html.escape(note)}</p>")
    md.append("")
    for name, header, rows in _tables(ctx):
        md += [
            f"## {name}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows),
            "",
        ]
        body.append(html_table(name, header, rows))
    md += ["## Figures", ""]
    body.append("<h2>Figures</h2>")
    for name, path in figures:
        rel = Path(path).relative_to(run_dir).as_posix()
        md += [f"### {name}", "", f"![{name}]({rel})", ""]
        body.append(html_figure(name, Path(path).read_bytes(), rel))
    page = html_page(title, body)
    with atomic_write(run_dir / "report.md") as fh:
        fh.write("\n".join(md))
    out = run_dir / "report.html"
    with atomic_write(out) as fh:
        fh.write(page)
    return out


def evaluation_log(
    ctx: dict[str, Any],
    sp: SplitOutcomes,
    task: Task,
    thumbnails: list[np.ndarray],
    overlays: dict[int, Picture],
) -> EvaluationLog:
    """What W&B shows of an evaluated split: one table row per scan (id, patient, thumbnail,
    true labels, probabilities and decisions per class, the Grad-CAM overlay of gallery scans),
    the curves, the multi-class confusion matrix, per-class AUC with CIs and the figures."""
    names = task.output_names
    columns = [
        "id",
        "patient",
        "thumbnail",
        *(f"true/{n}" for n in names),
        *(f"prob/{n}" for n in names),
        *(f"pred/{n}" for n in names),
        "gradcam",
    ]
    rows = [
        [
            r["id"],
            r["patient"],
            Picture(thumbnails[i]),
            *(None if v != v else int(v) for v in sp.truth[i]),  # unknown label: empty
            *(round(float(p), 6) for p in sp.probs[i]),
            *(int(v) for v in sp.decided[i]),
            overlays.get(i),
        ]
        for i, r in enumerate(sp.records)
    ]
    true_idx = task.class_indices(sp.truth)
    class_index = None if true_idx is None else (true_idx, task.class_indices(sp.decided))
    figures = dict(ctx["figures"]) | {p.stem: p for p in ctx["gallery"]}
    return EvaluationLog(
        sp.split, names, sp.probs, sp.truth, columns, rows, ctx["metrics"], figures, class_index
    )
