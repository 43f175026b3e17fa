"""One home per concept: each of these is defined once in the code base (src and benchmarks),
in the module that owns it, and the copies it replaced are gone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    p.relative_to(ROOT).as_posix(): p.read_text()
    for folder in ("src", "benchmarks")
    for p in (ROOT / folder).rglob("*.py")
}


def definitions(name: str) -> list[str]:
    pattern = re.compile(rf"^\s*(?:def|class)\s+{re.escape(name)}\b", re.MULTILINE)
    return sorted(f for f, text in SOURCES.items() if pattern.search(text))


@pytest.mark.parametrize(
    ("concept", "home"),
    [
        ("predict", "src/training/loop.py"),  # every prediction of a split
        ("tta_flips", "src/training/tasks.py"),  # test-time flips
        ("probabilities", "src/training/tasks.py"),  # sigmoid / softmax
        ("decisions", "src/training/tasks.py"),  # thresholds / arg-max
        ("metric_replicates", "src/training/metrics.py"),  # point estimates and bootstrap
        ("atomic_write", "src/files.py"),
        ("find_latest_checkpoint", "src/training/utils.py"),
        ("resolve_checkpoint", "src/training/utils.py"),
        ("apply_overrides", "src/config/loading.py"),  # dotted --set overrides
        ("write_curves", "src/training/curves.py"),
    ],
)
def test_each_concept_is_defined_once_in_its_home(concept, home):
    assert definitions(concept) == [home]


@pytest.mark.parametrize(
    "gone",
    [
        "tta_axes",
        "FlipAverage",
        "predict_batch",
        "predict_records",
        "predict_files",
        "predict_test_split",
        "one_hot_labels",
        "metrics_with_ci",
        "compute_binary_metrics",
        "compute_multiclass_metrics",
        "plot_training_curves",
        "atomic_torch_save",
        "atomic_write_text",
        "build_folder_atomically",
        "find_checkpoint",
        "config_with_overrides",
        "_set_dotted",
        "task_class_names",
    ],
)
def test_the_copies_are_gone(gone):
    assert definitions(gone) == []


def test_every_file_a_resume_reads_back_goes_through_the_atomic_write():
    """No plain ``write_text`` / ``open(..., "w")`` in src: every file is written whole, by
    ``atomic_write`` or inside the temporary folder of ``atomic_folder`` (``tmp / ...``)."""
    plain = re.compile(r"\.write_text\(|\.write_bytes\(|open\([^)]*['\"][wa]b?['\"]")
    found = [
        f"{f}:{i}: {line.strip()}"
        for f, text in SOURCES.items()
        if f.startswith("src/")
        for i, line in enumerate(text.splitlines(), 1)
        if plain.search(line) and "(tmp / " not in line and "os.devnull" not in line
    ]
    assert found == []
