"""Per-item augmentation seeds: persistent workers give exactly the samples that a resumed run
(fresh workers, or none) gives, and every epoch differs from the last."""

from __future__ import annotations

import torch
from monai.data import DataLoader

from src.data.augmented import AugmentedDataset, SeededIndex
from src.data.transforms import build_augmentation


def epoch_batches(loader: DataLoader, order: list, epoch: int) -> torch.Tensor:
    """The loader's samples of ``epoch``: its sampler (``order``) now names that epoch's seed."""
    order[:] = [SeededIndex(1000 + epoch, i) for i in range(len(order))]
    return torch.cat([b["image"] for b in loader])


def test_persistent_workers_repeat_a_resumed_run(tiny_config):
    cfg, _ = tiny_config
    cfg.data.augment.affine_prob = 1.0
    cfg.data.augment.noise_std = 0.05
    gen = torch.Generator().manual_seed(0)
    items = [
        {"image": torch.rand(1, 12, 12, 8, generator=gen), "label": torch.zeros(2)}
        for _ in range(6)
    ]
    ds = AugmentedDataset(items, build_augmentation(cfg, train=True))
    order: list = [None] * len(items)
    kept = DataLoader(ds, batch_size=2, sampler=order, num_workers=1, persistent_workers=True)
    first, second = epoch_batches(kept, order, 0), epoch_batches(kept, order, 1)
    fresh = DataLoader(ds, batch_size=2, sampler=order, num_workers=0)  # resumed at epoch 1
    assert torch.equal(epoch_batches(fresh, order, 1), second)
    assert torch.equal(epoch_batches(fresh, order, 0), first)
    assert not torch.allclose(first, second)
    assert not torch.allclose(first[0], first[1])  # items of an epoch get their own draws
