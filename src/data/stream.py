"""One training loader stream across epochs, so the workers never stop between them.

A fresh ``DataLoader`` iterator per epoch leaves the model waiting for the first batches of
every epoch: the workers only start on them when the epoch begins, after validation. Here a
single iterator runs over all remaining epochs; its batch sampler yields, epoch after epoch,
batches of ``(epoch seed, index)`` pairs. The workers therefore prefetch the next epoch's first
batches while the current epoch ends and while validation runs, and each item still gets its
augmentation from ``(epoch seed, index)`` alone (``AugmentedDataset``): an epoch's samples are
the same as with one loader per epoch, whatever the workers did before, so resume stays exact.

Shuffling is ``torch.randperm(n)`` from a generator seeded with the epoch seed, or, under
torchrun, the rank's ``DistributedSampler`` after ``set_epoch(epoch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from monai.data import DataLoader
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

from src.config import Config
from src.data.augmented import AugmentedDataset, SeededIndex
from src.data.loader_settings import resolve_loader_settings
from src.data.loaders import drops_single_last


class EpochBatchSampler(Sampler[list[SeededIndex]]):
    """Batches of ``SeededIndex(epoch seed, index)`` for epochs ``start .. end - 1`` in turn.

    A last batch of one sample is dropped (``drops_single_last``, as training always does);
    batches never cross an epoch boundary.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        epoch_seed: Callable[[int], int],
        start: int,
        end: int,
        sampler: Sampler | None = None,
    ) -> None:
        self.n = len(sampler) if sampler is not None else n
        self.batch_size, self.epoch_seed = batch_size, epoch_seed
        self.start, self.end, self.sampler = start, end, sampler
        self.drop_last = drops_single_last(self.n, batch_size)

    def batches_per_epoch(self) -> int:
        return len(BatchSampler(range(self.n), self.batch_size, self.drop_last))

    def __len__(self) -> int:
        return self.batches_per_epoch() * max(0, self.end - self.start)

    def order(self, epoch: int) -> list[int]:
        """The shuffled indices of ``epoch``."""
        if self.sampler is not None:
            if isinstance(self.sampler, DistributedSampler):
                self.sampler.set_epoch(epoch)
            return list(self.sampler)
        generator = torch.Generator().manual_seed(self.epoch_seed(epoch))
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[SeededIndex]]:
        for epoch in range(self.start, self.end):
            seed = self.epoch_seed(epoch)
            for batch in BatchSampler(self.order(epoch), self.batch_size, self.drop_last):
                yield [SeededIndex(seed, i) for i in batch]


class EpochStream:
    """Training batches of epochs ``start .. end - 1`` from one ``DataLoader`` iterator.

    ``stream.epoch(e)`` is the iterable of epoch ``e`` (with ``len``); epochs must be taken in
    order. Stopping early just drops the stream (its workers shut down with it).
    """

    def __init__(
        self,
        dataset: AugmentedDataset,
        cfg: Config,
        epoch_seed: Callable[[int], int],
        start: int,
        end: int,
        sampler: Sampler | None = None,
    ) -> None:
        s = resolve_loader_settings(cfg)
        self.batches = EpochBatchSampler(
            len(dataset), cfg.train.batch_size, epoch_seed, start, end, sampler
        )
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.batches,
            num_workers=s.num_workers,
            pin_memory=s.pin_memory,
            persistent_workers=False,  # one iterator for the whole run: nothing to persist
            prefetch_factor=s.prefetch_factor,
        )
        self.next_epoch = start
        self._it: Iterator | None = None

    def start_at(self, epoch: int) -> None:
        """Begin at ``epoch`` (a resumed run); only before the first batch is drawn."""
        if self._it is not None:
            raise RuntimeError("the stream has started; it cannot move to another epoch")
        self.batches.start = self.next_epoch = epoch

    def epoch(self, epoch: int) -> _EpochSlice:
        if epoch != self.next_epoch:
            raise RuntimeError(f"epoch {epoch} asked for, but the stream is at {self.next_epoch}")
        if self._it is None:  # started on first use: the workers fork after the caches are full
            self._it = iter(self.loader)
        self.next_epoch += 1
        return _EpochSlice(self._it, self.batches.batches_per_epoch())

    def close(self) -> None:
        """Stop the workers now (they also stop when the stream is dropped)."""
        self._it = None


class _EpochSlice:
    def __init__(self, it: Iterator, n: int) -> None:
        self.it, self.n = it, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator:
        for _ in range(self.n):
            yield next(self.it)
