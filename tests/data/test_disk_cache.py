"""A damaged disk-cache entry (truncated, empty, garbage) is rebuilt from the image and logged,
never a crash; entries are written next to their final name and renamed."""

from __future__ import annotations

import torch

from src.data.loaders import build_dataset, cache_folder
from src.data.splits import prepare_splits
from src.training.tasks import build_task


def test_damaged_entries_are_rebuilt_and_logged(tiny_config, tmp_path, capsys):
    cfg, _ = tiny_config
    cfg.data.cache = "disk"
    recs = prepare_splits(cfg, tmp_path, reuse=False, task=build_task(cfg), progress=False)["val"][
        :3
    ]
    ds = build_dataset(recs, cfg, train=False, progress=False)
    fresh = [ds[i]["image"] for i in range(3)]
    entries = sorted(cache_folder(cfg).glob("*.pt"))
    assert len(entries) == 3 and not list(cache_folder(cfg).glob(".*.tmp"))
    capsys.readouterr()
    truncated, empty, garbage = entries
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty.write_bytes(b"")
    garbage.write_bytes(b"not a cache entry" * 10)
    again = build_dataset(recs, cfg, train=False, progress=False)
    for i in range(3):
        assert torch.equal(again[i]["image"], fresh[i])
    err = capsys.readouterr().err
    for entry, kind in [(truncated, "RuntimeError"), (empty, "EOFError"), (garbage, "Unpickl")]:
        line = next(x for x in err.splitlines() if str(entry) in x)
        assert line.startswith(f"warning: disk cache entry {entry} is damaged ({kind}")
        assert line.endswith("rebuilding it from the image")
        torch.load(entry, weights_only=True)  # rewritten whole
