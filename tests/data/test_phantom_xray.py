"""Phantom radiographs: deterministic, BTXRD-like class shares, centres that differ, patients
with several images of one class and centre."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
from PIL import Image

from src.data.phantom_xray import CLASSES, draw_patients, generate_phantom_xray


def read_rows(root):
    with open(root / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_class_shares_follow_btxrd_and_patients_have_several_images():
    n_views, labels, centers = draw_patients(1250, seed=0)
    images = Counter()
    for n, k in zip(n_views, labels, strict=True):
        images[CLASSES[k]] += int(n)
    total = sum(images.values())
    assert 3400 < total < 4100
    for name, reference in zip(CLASSES, [1879, 1525, 342], strict=True):
        assert abs(images[name] / total - reference / 3746) < 0.03, (name, images)
    assert set(centers) == {"A", "B", "C"} and n_views.min() == 1 and n_views.max() == 5


def test_generated_set_is_deterministic_and_centres_differ(tmp_path):
    a = generate_phantom_xray(tmp_path / "a", n_patients=12, seed=5, progress=False).parent
    b = generate_phantom_xray(tmp_path / "b", n_patients=12, seed=5, progress=False).parent
    rows = read_rows(a)
    assert rows == read_rows(b)
    assert list(rows[0]) == ["image", "label", "patient_id", "center"]
    for row in rows:
        assert (a / row["image"]).read_bytes() == (b / row["image"]).read_bytes()
    by_patient: dict[str, set] = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], set()).add((row["label"], row["center"]))
    assert all(len(v) == 1 for v in by_patient.values())  # one class and centre per patient
    modes = {}
    for row in rows:
        image = Image.open(a / row["image"])
        modes.setdefault(row["center"], set()).add(
            (image.format, np.asarray(image).dtype.kind, image.size)
        )
    # the three centres store different formats / bit depths / matrix sizes
    assert len({frozenset(m) for m in modes.values()}) == len(modes)
