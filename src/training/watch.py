"""Per-class recall on the console, and the collapse watch on ``train.watch_classes``.

A rare class (the malignant 9 % of a bone-tumour set) can vanish from a model's predictions
while the loss and the macro metrics still look fine. ``collapsed_classes`` reads the metric
history, so it needs no state of its own and gives the same answer after a resume.
"""

from __future__ import annotations

import math
from typing import Any

COLLAPSE_EPOCHS = 2  # consecutive epochs of zero recall before a warning


def collapsed_classes(
    history: list[dict[str, Any]], watched: list[str], epochs: int = COLLAPSE_EPOCHS
) -> list[str]:
    """Watched classes whose validation recall was 0 in each of the last ``epochs`` epochs
    (epochs where the class had no validation samples do not count as collapse)."""
    if len(history) < epochs:
        return []
    recent = history[-epochs:]
    out = []
    for name in watched:
        recalls = [row.get(f"val/recall/{name}", math.nan) for row in recent]
        supports = [row.get(f"val/support/{name}", 1.0) for row in recent]
        if all(r == 0 for r in recalls) and all(s > 0 for s in supports):
            out.append(name)
    return out


def recall_text(row: dict[str, Any], class_names: list[str]) -> str:
    """``recall normal 0.912  benign 0.800  malignant 0.125`` from an epoch's metrics row."""
    shown = [(n, row[f"val/recall/{n}"]) for n in class_names if f"val/recall/{n}" in row]
    if not shown:
        return ""
    return "\n      val recall: " + "  ".join(f"{n} {v:.3f}" for n, v in shown)
