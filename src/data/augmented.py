"""Augmentation after the caches, seeded per item from (epoch seed, index).

The loader asks for ``SeededIndex(epoch seed, i)`` (``src.data.stream``), and item ``i`` is
augmented with random numbers drawn from that pair alone, so an epoch's samples do not depend
on the number of workers, on which worker drew an item, or on what the workers did before. A
resumed run therefore repeats an uninterrupted one exactly. A plain integer index (evaluation
loaders) uses epoch seed 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from monai.data import Dataset
from monai.transforms import Randomizable, apply_transform


class SeededIndex(NamedTuple):
    """An item index that carries the seed of its epoch."""

    epoch_seed: int
    index: int


def item_seed(epoch_seed: int, index: int) -> int:
    """The augmentation seed of item ``index`` in the epoch of ``epoch_seed`` (< 2**32)."""
    seq = np.random.SeedSequence([epoch_seed % 2**63, int(index)])
    return int(seq.generate_state(1)[0])


class AugmentedDataset(Dataset):
    """MONAI ``Dataset`` over the (cached) fixed data whose random transform is seeded per item."""

    def __getitem__(self, index):
        if isinstance(index, SeededIndex):
            return self._transform(index.index, index.epoch_seed)
        return super().__getitem__(index)

    def _transform(self, index: int, epoch_seed: int = 0):
        item = self.data[index]
        if self.transform is None:
            return item
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=item_seed(epoch_seed, index))
        return apply_transform(self.transform, item)
