"""Read back what a W&B run logged offline: its ``run-<id>.wandb`` file.

W&B 0.31 ships no reader. The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic,
version), then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32, length, type: full,
first, middle, last); a block's tail shorter than a chunk header is padding. The chunks of one
record join into a serialized ``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[pb.Record]:
    """Every record of a ``.wandb`` file, in the order W&B wrote them."""
    data = Path(path).read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B", f"{path}: not a W&B run file"
    if len(data) < HEADER:  # created, nothing written yet
        return []
    records, pos, parts = [], HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # a zero-filled tail: the log ends or the block does
            pos += BLOCK - pos % BLOCK
            continue
        if pos + HEADER + length > len(data):  # a chunk still being written
            break
        chunk = data[pos + HEADER : pos + HEADER + length]
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"{path}: bad CRC at {pos}"
        pos += HEADER + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def _items(items) -> dict[str, Any]:
    """History / summary items as a nested dict (``nested_key`` paths become nested keys)."""
    out: dict[str, Any] = {}
    for item in items:
        keys = [item.key] if item.key else list(item.nested_key)
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(item.value_json)
    return out


class LoggedRun:
    """What one offline run folder (``offline-run-*``) holds: history rows, metric definitions,
    artifacts, run files and chart specs (``_wandb.visualize`` in the config)."""

    def __init__(self, folder: Path, wait: float = 60.0):
        self.folder = Path(folder)
        (path,) = self.folder.glob("run-*.wandb")
        # W&B's service may still be writing the file when ``finish()`` has returned: wait for
        # the run's exit record, the last it writes
        deadline = time.monotonic() + wait
        while not any(r.WhichOneof("record_type") == "exit" for r in read_records(path)):
            assert time.monotonic() < deadline, f"{path}: no exit record after {wait} s"
            time.sleep(0.2)
        self.records = read_records(path)
        self.history = [_items(h.item) for h in self.of("history")]
        self.metrics = {m.name or m.glob_name: m.step_metric for m in self.of("metric")}
        self.artifacts = list(self.of("artifact"))
        self.files = [f.path for r in self.of("files") for f in r.files]
        config = _items(u for c in self.of("config") for u in c.update)
        self.charts = config.get("_wandb", {}).get("visualize", {})
        self.run_id = next(self.of("run")).run_id

    def table(self, key: str) -> tuple[dict[str, Any], Any]:
        """(the table logged as ``key``, its artifact record): the JSON W&B uploads, read from
        the artifact's staged copy."""
        for artifact in self.artifacts:
            for entry in artifact.manifest.contents:
                if entry.path == f"{key}.table.json":
                    return json.loads(Path(entry.local_path).read_text()), artifact
        raise KeyError(key)

    def of(self, kind: str):
        return (getattr(r, kind) for r in self.records if r.WhichOneof("record_type") == kind)


def logged_runs(run_dir: Path) -> list[LoggedRun]:
    """The offline W&B runs of a run folder, oldest first."""
    return [LoggedRun(f) for f in sorted((Path(run_dir) / "wandb").glob("offline-run-*"))]
