"""MONAI ``PersistentDataset`` made safe against killed writers and damaged cache files.

What MONAI 1.6 gets wrong, and this subclass fixes:
- it writes each entry in the system temp folder and ``shutil.move``s it into the cache; across
  file systems that move is a copy, so a kill mid-copy leaves a torn entry under its real name
  (and the temp folder behind). Here the entry is written next to its final name and
  ``os.replace``d, as checkpoints are;
- on reading, only an ``UnpicklingError`` or "Invalid magic number" is treated as a corrupt entry:
  a truncated file (``RuntimeError: ... failed finding central directory``) or an empty one
  (``EOFError``) crashes the run. Here any failure to load an entry deletes it, rebuilds it from
  the image and says so on stderr.
"""

from __future__ import annotations

import contextlib
import sys
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from monai.data import PersistentDataset
from monai.utils import convert_to_tensor

from src.files import atomic_write


class CheckedPersistentDataset(PersistentDataset):
    """``PersistentDataset`` with atomic entry writes and rebuilt (not fatal) damaged entries."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cache_dir is not None:  # temp files of writers killed over 10 minutes ago
            for tmp in Path(self.cache_dir).glob(".*.tmp"):
                with contextlib.suppress(OSError):  # another process may remove it first
                    if time.time() - tmp.stat().st_mtime > 600:
                        tmp.unlink()

    def _cachecheck(self, item_transformed: dict[str, Any]) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        entry = Path(self.cache_dir) / f"{name}.pt"
        if entry.is_file():
            try:
                return torch.load(entry, weights_only=True)  # never pickled code
            except Exception as err:  # torn, empty, garbage: the image is still there
                print(
                    f"warning: disk cache entry {entry} is damaged ({type(err).__name__}); "
                    "rebuilding it from the image",
                    file=sys.stderr,
                    flush=True,
                )
                entry.unlink(missing_ok=True)
        item = self._pre_transform(deepcopy(item_transformed))
        with atomic_write(entry, "wb", durable=False) as fh:  # a damaged entry is rebuilt
            torch.save(
                convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta), fh
            )
        return item
