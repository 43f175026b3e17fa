"""Data-parallel training under ``torchrun``; a plain single process without it.

``init_distributed`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
starts a process group: NCCL when the run trains on CUDA, Gloo on the CPU. Without that
environment nothing starts and every helper here is a no-op, so ``fit`` runs unchanged.

Who does what:
- Rank 0 alone prints, shows progress bars, writes ``config.yaml``, ``splits.json``,
  ``metrics.csv``, checkpoints and W&B; the other ranks wait at a barrier and read what it wrote
  (the run folder must be on a filesystem every node sees).
- Training: ``DistributedSampler(seed=train.seed)`` with ``set_epoch`` reshuffles the whole
  training split across ranks every epoch (it repeats a few samples so that all ranks take the
  same number of steps).
- Evaluation: rank r takes samples r, r+W, r+2W, ... (no padding), runs the plain model, and
  ``gather_predictions`` interleaves every rank's logits back into split order, so each sample
  counts exactly once and every rank computes the same metrics on the whole split.
- Caches: before the first epoch the ranks fill disjoint shares of the disk cache, then wait for
  each other (no two processes ever write the same entry). ``data.ram_cache_shard`` makes each
  rank keep only its own fixed shard in the RAM cache (see ``shard_records``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from multiprocessing.pool import ThreadPool
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from monai.data import DistributedSampler as EvalShardSampler
from monai.data import partition_dataset
from torch import nn
from torch.utils.data import DistributedSampler, Sampler
from tqdm import tqdm

from src.config import Config, ConfigError
from src.data.disk_cache import CheckedPersistentDataset
from src.data.loaders import cache_folder, item_hash, to_items
from src.data.records import DataError
from src.data.transforms import build_preprocessing

T = TypeVar("T")


def init_distributed(device_name: str) -> bool:
    """Join torchrun's process group when its environment is present; True when it did.

    CUDA runs use NCCL and one GPU per local rank; CPU runs use Gloo. The other ranks' standard
    output is silenced, so console lines and summaries come once, from rank 0.
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_initialized()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device_name != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=30))
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return True


def close_distributed() -> None:
    """Leave the process group (no-op in a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, and in a single process: the one that writes files and logs."""
    return get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (writing what the block makes); the others run it after."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def run_on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result (or its error) on every rank."""
    if get_world_size() == 1:
        return fn()
    box: list[Any] = [None, None]
    if is_main():
        try:
            box[0] = fn()
        except Exception as err:  # re-raised on every rank, so all exit the same way
            box[1] = err
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise box[1]
    return box[0]


def rank_device(device: torch.device) -> torch.device:
    """Each rank's own GPU (``cuda:LOCAL_RANK``); the CPU stays the CPU."""
    if device.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def default_threads() -> int:
    """CPU threads for one process: the cores shared among the processes on this node."""
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // per_node)


def distribute_model(model: nn.Module, cfg: Config, device: torch.device) -> nn.Module:
    """DDP around ``model`` (optionally with SyncBatchNorm); ``model`` itself in one process.

    Checkpoints always hold the unwrapped model's state dict, so they load either way.
    """
    if get_world_size() == 1:
        return model
    if cfg.train.sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError(
                "train.sync_batchnorm: SyncBatchNorm runs on GPUs only; set it to false "
                "for a CPU run"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: after an epoch each rank
    has updated its own, and evaluation must use the statistics that rank 0 saves."""
    if get_world_size() == 1:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def mean_over_ranks(value: float) -> float:
    """The mean of a per-rank number (the ranks hold equal shares of the training split)."""
    if get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / get_world_size()


def realign_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> int:
    """Put the schedule at optimizer step ``step``; returns it. A resume with another number of
    processes (or batch size) takes another number of steps per epoch: the learning rate must
    continue from the same epoch of the schedule, not from the old step count."""
    scheduler.last_epoch = step
    lrs = [base * f(step) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs
    return step


def ram_sharded(cfg: Config) -> bool:
    """True when each rank caches only its own shard of a split in RAM."""
    return cfg.data.ram_cache_shard and "ram" in cfg.data.cache and get_world_size() > 1


def shard_records(records: list[dict], cfg: Config, train: bool) -> list[dict]:
    """The records this rank builds its dataset from: all of them, or with
    ``data.ram_cache_shard`` only its own shard.

    The trade-off of the shard: each rank holds 1/W of the RAM cache, but a training sample
    stays on the same rank for the whole run (MONAI ``partition_dataset``, seeded once with
    ``train.seed``); each rank reshuffles only its own shard every epoch. The training shards
    are of equal length (a few samples repeat) so that all ranks take the same number of steps.
    """
    if not ram_sharded(cfg):
        return records
    rank, world = get_rank(), get_world_size()
    if len(records) < world:
        raise DataError(
            f"the {'training' if train else 'evaluation'} split has {len(records)} samples "
            f"for {world} processes; use fewer processes or more data"
        )
    if train:
        shards = partition_dataset(
            records, num_partitions=world, shuffle=True, seed=cfg.train.seed, even_divisible=True
        )
        return list(shards[rank])
    return records[rank::world]  # same samples as EvalShardSampler: rank, rank+W, ...


def shard_sampler(dataset, cfg: Config, train: bool) -> Sampler | None:
    """This rank's sampler; None where the loader's own order is right (one process, or a
    RAM-cache shard that already is this rank's share)."""
    if get_world_size() == 1 or ram_sharded(cfg):
        return None
    if train:
        return DistributedSampler(dataset, shuffle=True, seed=cfg.train.seed, drop_last=False)
    if len(dataset) < get_world_size():
        raise DataError(
            f"an evaluation split has {len(dataset)} samples for {get_world_size()} processes; "
            "use fewer processes or a larger data.split.val_fraction"
        )
    # Not padded: rank r takes samples r, r+W, ..., which gather_predictions interleaves back.
    return EvalShardSampler(dataset, even_divisible=False, shuffle=False)


def interleave_shards(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Undo the round-robin sharding: ``chunks[r]`` holds samples r, r+W, r+2W, ... of a split."""
    world = len(chunks)
    total = sum(len(c) for c in chunks)
    out = chunks[0].new_empty((total, *chunks[0].shape[1:]))
    for r, chunk in enumerate(chunks):
        expected = len(range(r, total, world))
        if len(chunk) != expected:
            raise RuntimeError(f"rank {r} holds {len(chunk)} samples, expected {expected}")
        out[r::world] = chunk
    return out


def gather_predictions(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's logits and labels, in split order, on every rank (the input itself in one
    process). Shards differ in length by at most one; nothing is padded, nothing repeats."""
    if get_world_size() == 1:
        return logits, labels
    parts: list[Any] = [None] * get_world_size()
    dist.all_gather_object(parts, (logits.cpu(), labels.cpu()))
    return interleave_shards([p[0] for p in parts]), interleave_shards([p[1] for p in parts])


def warm_disk_cache(splits: list[list[dict]], cfg: Config, progress: bool = False) -> None:
    """Fill the disk cache before training, each rank its own disjoint share of the entries,
    then wait for all: no two processes write one entry, and later reads never race a write.
    A no-op in one process (the cache fills during the first epoch) or without a disk cache."""
    if get_world_size() == 1 or "disk" not in cfg.data.cache:
        return
    folder = cache_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    items = [it for records in splits for it in to_items(records)]
    mine = items[get_rank() :: get_world_size()]
    ds = CheckedPersistentDataset(
        mine, build_preprocessing(cfg), cache_dir=folder, hash_func=item_hash
    )
    workers = max(1, default_threads())
    with ThreadPool(workers) as pool:
        done = pool.imap_unordered(ds.__getitem__, range(len(ds)))
        for _ in tqdm(done, total=len(mine), desc="disk cache", disable=not progress):
            pass
    barrier()
