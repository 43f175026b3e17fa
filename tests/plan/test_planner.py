"""``python -m src.plan`` end to end on tiny synthetic sets: the config it writes loads through
the config loader and says what the rules say, the fingerprint is written, the data-set report
is self-contained HTML, and bad input is one ``error:`` line."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from src.config import load_config
from src.plan.__main__ import main


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory) -> Path:
    """100 CT-like volumes of about 1 x 1 x 5 mm (anisotropic), 3 of them with a rare finding,
    two centres, 50 patients with two scans each."""
    root = tmp_path_factory.mktemp("plan_ct")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(100):
        hu = rng.normal(-800, 100, (24, 24, 6)).astype(np.int16)
        hu[6:18, 6:18] = rng.normal(40, 20, (12, 12, 6))
        affine = np.diag([(0.9, 1.0, 1.1)[i % 3], 1.0, (4.0, 5.0, 6.0)[i % 3], 1.0])
        nib.save(nib.Nifti1Image(hu, affine), root / "images" / f"s{i:03d}.nii.gz")
        rows.append(
            {
                "image": f"images/s{i:03d}.nii.gz",
                "patient_id": f"p{i // 2}",
                "center": "A" if i < 70 else "B",
                "rare": int(i in (5, 40, 80)),
                "common": i % 2,
            }
        )
    write_rows(root / "labels.csv", rows)
    return root


@pytest.fixture(scope="module")
def xray_set(tmp_path_factory) -> Path:
    """60 8-bit PNGs of 32 x 24 with an official split column and three classes; one empty."""
    root = tmp_path_factory.mktemp("plan_xray")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        pixels = rng.integers(0, 256, (24, 32), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(root / "images" / f"x{i}.png")
        split = "train" if i < 40 else ("val" if i < 50 else "test")
        rows.append({"image": f"images/x{i}.png", "label": ["a", "b", "c"][i % 3], "split": split})
    write_rows(root / "labels.csv", rows)
    (root / "images" / "x7.png").write_bytes(b"")  # a failed export: named in the report
    return root


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.sources += [v or "" for k, v in attrs if k in ("src", "href")]


def run_plan(root: Path, out: Path, *extra: str) -> Path:
    args = ["--csv", str(root / "labels.csv"), "--image-root", str(root), "--out", str(out)]
    assert main([*args, "--report-dir", str(out.parent / "report"), "--sample", "8", *extra]) == 0
    return out.parent / "report"


def test_ct_plan_follows_the_rules_and_loads(ct_set, tmp_path):
    out = tmp_path / "ct.yaml"
    report = run_plan(ct_set, out, "--memory-gb", "4")
    cfg = load_config(out)  # the written config passes the validator
    d = cfg.data
    assert d.task == "multilabel" and d.label_columns == ["rare", "common"]
    assert d.patient_column == "patient_id" and d.center_column == "center"
    # anisotropic: medians in plane, the slice axis at its 10th percentile, not resampled to 1 mm
    assert d.spacing == [1.0, 1.0, 4.0]
    assert d.spatial_size == [24, 24, 8]  # the median field of view, 24 x 24 x 30 mm
    assert d.intensity_mode == "window" and d.intensity_min < -900 and d.intensity_max > 0
    assert cfg.train.pos_weight is True and cfg.train.watch_classes == ["rare"]
    assert d.split.strategy == "stratified" and d.split.holdout_centers == ["B"]
    text = out.read_text()
    assert "# anisotropic" in text and "# rarest class 'rare' 3.0%" in text
    fp = json.loads((report / "fingerprint.json").read_text())
    assert fp["labels"]["positives"] == {"rare": 3, "common": 50}
    assert fp["spacing"]["median"] == [1.0, 1.0, 5.0] and fp["modality"] == "ct"
    assert fp["groups"]["patients"] == 50


def test_2d_plan_keeps_the_split_column_and_report_is_self_contained(xray_set, tmp_path):
    out = tmp_path / "xray.yaml"
    report = run_plan(xray_set, out)
    cfg = load_config(out)
    assert cfg.data.task == "multiclass" and cfg.data.class_names == ["a", "b", "c"]
    assert cfg.data.split.strategy == "column" and cfg.data.spacing == []
    assert cfg.data.spatial_size == [32, 24] and cfg.data.intensity_mode == "bit_depth"
    page = (report / "dataset_report.html").read_text()
    parser = _Tags()
    parser.feed(page)
    assert {"html", "table", "img"} <= set(parser.tags) and "script" not in parser.tags
    assert parser.sources and all(s.startswith("data:image/png;base64,") for s in parser.sources)
    assert "http://" not in page and "https://" not in page
    assert "Prevalence" in page and "Warnings (1)" in page
    assert "row 9, image images/x7.png: the file is empty" in page


def test_bad_input_is_one_error_line(xray_set, tmp_path, capsys):
    out = str(tmp_path / "x.yaml")
    code = main(["--csv", str(tmp_path / "none.csv"), "--image-root", str(xray_set), "--out", out])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --csv: file not found") and "none.csv" in err
    args = ["--csv", str(xray_set / "labels.csv"), "--image-root", str(xray_set), "--out", out]
    assert main([*args, "--label-columns", "finding"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "'finding'" in err and len(err.splitlines()) == 1
