"""Inference on files and folders: same numbers as evaluation; a corrupt file is named."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from src.data.splits import run_splits
from src.inference.predict import main
from src.inference.runtime import load_run, split_outcomes


def test_folder_with_a_corrupt_file_predicts_the_rest_and_fails(tiny_run, tmp_path, capsys):
    run = load_run(tiny_run)
    parts = run_splits(run.cfg, tiny_run, run.task)
    parts["test"] = records = parts["test"][:3]
    folder = tmp_path / "scans"
    folder.mkdir()
    for r in records:
        shutil.copy(r["image"], folder / r["image"].rsplit("/", 1)[-1])
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really a gzip file")
    (folder / "notes.txt").write_text("ignored: not an image")
    out = tmp_path / "preds.csv"
    assert main(["--run", str(tiny_run), str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and err.count("error: cannot predict") == 1
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and not any("broken" in r["file"] for r in rows)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert [f["file"].rsplit("/", 1)[-1] for f in meta["failed"]] == ["broken.nii.gz"]
    assert meta["thresholds"]["source"] == "val" and meta["class_names"] == run.cfg.class_names
    # the same probabilities as the evaluation path, and decisions from the stored thresholds
    expected = split_outcomes(run, "test", parts=parts).probs
    names = run.cfg.class_names
    got = np.array([[float(r[f"prob/{n}"]) for n in names] for r in rows])
    order = np.argsort([r["image"].rsplit("/", 1)[-1] for r in records])
    np.testing.assert_allclose(got, expected[order], atol=1e-5)
    for r in rows:
        for n in names:
            t = meta["thresholds"]["classes"][n]["threshold"]
            assert int(r[f"pred/{n}"]) == int(float(r[f"prob/{n}"]) >= t - 1e-6)
        positive = [n for n in names if r[f"pred/{n}"] == "1"]
        assert r["predicted"] == "; ".join(positive)


def test_all_readable_exits_zero_and_missing_input_is_named(tiny_run, tmp_path, capsys):
    run = load_run(tiny_run)
    image = run_splits(run.cfg, tiny_run, run.task)["val"][0]["image"]
    out = tmp_path / "one.csv"
    assert main(["--run", str(tiny_run), image, "--out", str(out)]) == 0
    assert main(["--run", str(tiny_run), image, "nope.nii.gz", "--out", str(out)]) == 1
    assert "error: cannot predict nope.nii.gz: no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--run", "no/such/run", "x.nii.gz"]])
def test_bad_run_folder_is_one_error_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --run: folder not found: no/such/run"


def test_a_dicom_folder_is_one_scan_and_a_nifti_folder_a_list(
    tiny_run, tiny_phantom, dicom_phantom, tmp_path
):
    series = sorted((dicom_phantom / "images").iterdir())[:2]
    folder = tmp_path / "niftis"
    folder.mkdir()
    for f in sorted((tiny_phantom / "images").glob("*.nii.gz"))[:2]:
        shutil.copy(f, folder / f.name)
    out = tmp_path / "preds.csv"
    argv = ["--run", str(tiny_run), *map(str, series), str(folder), "--out", str(out)]
    assert main(argv) == 0
    with open(out, newline="") as fh:
        files = [r["file"] for r in csv.DictReader(fh)]
    assert files == [*map(str, series), *map(str, sorted(folder.iterdir()))]
