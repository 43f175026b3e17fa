"""The collapse watch fires after exactly 2 epochs of zero recall of a watched class."""

from __future__ import annotations

import pytest

from src.training.watch import collapsed_classes, recall_text


def rows(*recalls, support=5.0):
    return [
        {
            "epoch": i + 1,
            "val/recall/malignant": r,
            "val/support/malignant": support,
            "val/recall/normal": 0.9,
            "val/support/normal": 9.0,
        }
        for i, r in enumerate(recalls)
    ]


@pytest.mark.parametrize(
    ("recalls", "fires"),
    [
        ((0.0,), False),  # one zero epoch: not yet
        ((0.4, 0.0), False),
        ((0.0, 0.0), True),  # exactly two in a row
        ((0.3, 0.0, 0.0), True),
        ((0.0, 0.0, 0.0), True),  # stays collapsed: keeps warning
        ((0.0, 0.2, 0.0), False),  # not in a row
        ((0.0, 0.0, 0.1), False),  # recovered
    ],
)
def test_collapse_after_exactly_two_zero_recall_epochs(recalls, fires):
    assert collapsed_classes(rows(*recalls), ["malignant"]) == (["malignant"] if fires else [])


def test_unwatched_classes_and_empty_validation_do_not_fire():
    assert collapsed_classes(rows(0.0, 0.0), []) == []
    assert collapsed_classes(rows(0.0, 0.0, support=0.0), ["malignant"]) == []


def test_recall_text_lists_every_class():
    text = recall_text(rows(0.25)[0], ["normal", "malignant"])
    assert text.strip() == "val recall: normal 0.900  malignant 0.250"
