"""Files that appear whole or not at all: the one home of atomic writes.

``atomic_write`` writes beside the final name and ``os.replace``s it, so a crash leaves the old
file or the new one, never a torn file under the real name; ``atomic_folder`` does the same for
a folder built in one go (a generated data set). Every file a resume reads back is written
through them (checkpoints, ``splits.json``, ``metrics.csv``, ``thresholds.json``, cache entries).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` (``mode`` ``"w"`` text or ``"wb"`` bytes); when the
    block ends without an error it is flushed, fsynced and renamed to ``path``; on an error it
    is deleted and ``path`` is untouched.

    ``with atomic_write(p) as fh: fh.write(text)``; ``torch.save(obj, fh)`` and
    ``fig.savefig(fh, format="png")`` work on a ``"wb"`` handle.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def remove_partial_writes(folder: str | Path) -> None:
    """Delete the temporary files (``.<name>.*.tmp``) that a killed ``atomic_write`` leaves."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; when the block succeeds it replaces
    ``out_dir`` whole (an old one is removed), and on any error it is deleted."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
