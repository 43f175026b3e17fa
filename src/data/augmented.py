"""Augmentation after the caches, seeded per item from an epoch seed shared with the workers.

Item ``i`` of an epoch is augmented with random numbers drawn from ``(epoch seed, i)`` alone, so
an epoch's samples do not depend on the number of workers, on which worker drew an item, or on
whether the workers lived through earlier epochs (persistent workers). A resumed run therefore
repeats an uninterrupted one exactly, with persistent workers on. The epoch seed lives in a
shared-memory tensor: workers forked once read the value that the main process sets before each
epoch's iterator is created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Randomizable, apply_transform


class SeededIndex(NamedTuple):
    """An item index that carries its epoch seed (``src.data.stream``: one loader iterator
    over several epochs, so the shared epoch seed cannot be used)."""

    epoch_seed: int
    index: int


class AugmentedDataset(Dataset):
    """MONAI ``Dataset`` over the (cached) fixed data whose random transform is seeded per item."""

    def __init__(self, data: Sequence, transform: Callable | None) -> None:
        super().__init__(data, transform)
        self._epoch_seed = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch_seed(self, seed: int) -> None:
        """Seed of the coming epoch; call before the epoch's DataLoader iterator is created."""
        self._epoch_seed[0] = int(seed)

    def item_seed(self, index: int, epoch_seed: int | None = None) -> int:
        """The seed of item ``index`` in the epoch of ``epoch_seed`` (default: the current
        epoch's), well mixed, < 2**32."""
        epoch_seed = int(self._epoch_seed[0]) if epoch_seed is None else epoch_seed
        seq = np.random.SeedSequence([epoch_seed % 2**63, int(index)])
        return int(seq.generate_state(1)[0])

    def __getitem__(self, index):
        if isinstance(index, SeededIndex):
            return self._transform(index.index, index.epoch_seed)
        return super().__getitem__(index)

    def _transform(self, index: int, epoch_seed: int | None = None):
        item = self.data[index]
        if self.transform is None:
            return item
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=self.item_seed(index, epoch_seed))
        return apply_transform(self.transform, item)
