"""Files that appear whole or not at all: the one home of atomic writes.

``atomic_write`` writes beside the final name and ``os.replace``s it, so a crash leaves the old
file or the new one, never a torn file under the real name; ``atomic_folder`` does the same for
a folder built in one go (a generated data set). Every file a resume reads back is written
through them (checkpoints, ``splits.json``, ``metrics.csv``, ``thresholds.json``, cache entries).
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", durable: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` (``mode`` ``"w"`` text or ``"wb"`` bytes); when the
    block ends without an error it is flushed (fsynced when ``durable``) and renamed to
    ``path``; on an error it is deleted and ``path`` is untouched. ``durable=False`` suits files
    that are rebuilt when found damaged (cache entries): a crash still never leaves a torn file
    under the real name, only a power loss may.

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
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
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


def write_csv(
    path: str | Path, rows: list[dict[str, Any]], columns: list[str] | None = None
) -> None:
    """A CSV of ``rows`` (dicts), atomically; ``columns`` default to every key, in first-seen
    order (rows may lack some: their cells stay empty)."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_write(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG, atomically (a viewer never sees half a file)."""
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, dpi=dpi, format="png")
    return Path(path)
