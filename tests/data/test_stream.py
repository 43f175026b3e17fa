"""One loader stream across epochs: the same batches as one loader per epoch (order and
augmentation), a stream started at epoch k repeats epochs k.. of a full one (resume), and
the workers really prefetch the next epoch before it is asked for."""

from __future__ import annotations

import time

import torch
from monai.data import DataLoader

from src.data.augmented import AugmentedDataset, SeededIndex
from src.data.stream import EpochBatchSampler, EpochStream
from src.data.transforms import build_augmentation


def seed_of(epoch: int) -> int:
    return 1000 + epoch


def make_dataset(cfg, n: int = 8) -> AugmentedDataset:
    cfg.data.augment.affine_prob = 1.0
    cfg.data.augment.noise_std = 0.05
    gen = torch.Generator().manual_seed(0)
    items = [
        {"image": torch.rand(1, 12, 12, 8, generator=gen), "label": torch.full((2,), float(i))}
        for i in range(n)
    ]
    return AugmentedDataset(items, build_augmentation(cfg, train=True))


def per_epoch_loader(ds: AugmentedDataset, epoch: int, batch_size: int) -> list[dict]:
    """A loader of its own per epoch: ``randperm`` order of the epoch seed, items seeded by it."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed_of(epoch)))
    sampler = [SeededIndex(seed_of(epoch), i) for i in order.tolist()]
    return list(DataLoader(ds, batch_size=batch_size, sampler=sampler))


def test_stream_equals_one_loader_per_epoch_and_resumes_exactly(tiny_config):
    cfg, _ = tiny_config
    cfg.train.batch_size, cfg.train.num_workers = 3, 1
    ds = make_dataset(cfg)
    stream = EpochStream(ds, cfg, seed_of, 0, 3)
    streamed = [list(stream.epoch(e)) for e in range(3)]
    for e in range(3):
        expected = per_epoch_loader(ds, e, 3)
        assert len(streamed[e]) == len(expected) == 3  # 8 = 3 + 3 + 2: the partial batch is kept
        for got, want in zip(streamed[e], expected, strict=True):
            assert torch.equal(got["label"], want["label"])  # same order
            assert torch.equal(got["image"], want["image"])  # same augmentation
    assert not torch.equal(streamed[0][0]["image"], streamed[1][0]["image"])
    resumed = EpochStream(ds, cfg, seed_of, 0, 3)
    resumed.start_at(2)
    for got, want in zip(resumed.epoch(2), streamed[2], strict=True):
        assert torch.equal(got["image"], want["image"])


def test_batches_never_cross_epochs_and_single_sample_batch_is_dropped():
    s = EpochBatchSampler(9, 4, seed_of, 0, 2)  # 9 = 4 + 4 + 1: the 1 is dropped
    batches = list(s)
    assert len(batches) == len(s) == 4 and s.batches_per_epoch() == 2
    first, second = batches[:2], batches[2:]
    assert {i.epoch_seed for b in first for i in b} == {seed_of(0)}
    assert {i.epoch_seed for b in second for i in b} == {seed_of(1)}
    assert all(len(b) == 4 for b in batches)


class SlowItems(torch.utils.data.Dataset):
    def __init__(self, n: int, seconds: float) -> None:
        self.n, self.seconds = n, seconds

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        time.sleep(self.seconds)
        return {"image": torch.zeros(1), "label": torch.zeros(1)}


def test_workers_prefetch_the_next_epoch_while_the_main_process_is_busy(tiny_config):
    cfg, _ = tiny_config
    cfg.train.batch_size, cfg.train.num_workers, cfg.train.prefetch_factor = 2, 1, 2
    ds = AugmentedDataset(SlowItems(4, 0.2), transform=None)  # 0.4 s per batch
    stream = EpochStream(ds, cfg, seed_of, 0, 2)
    list(stream.epoch(0))
    time.sleep(1.5)  # "validation": the worker fills its two prefetch slots meanwhile
    t0 = time.perf_counter()
    list(stream.epoch(1))
    assert time.perf_counter() - t0 < 0.3  # both batches were ready
    stream.close()
