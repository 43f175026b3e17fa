"""Seeded SIGKILL stress test: kill the trainer at random moments, resume, compare metrics.csv.

Kill moments, drawn from a seeded RNG: while a disk-cache entry is being written (first epoch),
while a checkpoint is being written, just after an epoch ended, and at a random time in an epoch.
Children run with ``torch.save`` slowed down (half the bytes, a pause, the rest), so the
"during a write" windows are wide enough to hit. After every kill: every checkpoint under its
real name loads, ``metrics.csv`` parses. Before one of the resumes a disk-cache entry is
truncated (a disk fault): it must be rebuilt and logged. At the end the run's ``metrics.csv``
must equal the uninterrupted run's byte for byte.

    python -m benchmarks.sigkill_stress --kills 20 --seed 0   # tiny phantom, 24 epochs

The CI version (5 kills) is ``tests/training/test_sigkill_stress.py``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

KINDS = ("cache-write", "checkpoint-write", "after-epoch", "in-epoch")
SLOW_SAVE_S = 0.05


def child_main(argv: list[str]) -> int:
    """The trainer with a slow ``torch.save``: a torn temp file exists for ``SLOW_SAVE_S``."""
    import torch

    from src.training.trainer import main

    real_save = torch.save

    def slow_save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        opened = isinstance(f, str | os.PathLike)
        fh = open(f, "wb") if opened else f  # noqa: SIM115 - closed below when opened here
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(SLOW_SAVE_S)
        fh.write(data[len(data) // 2 :])
        if opened:
            fh.close()

    torch.save = slow_save
    return main(argv)


def train_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.sigkill_stress", "--child", "--config", str(config)]


def metric_rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path) as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


def check_intact(run: Path) -> None:
    """Every checkpoint under its real name loads; metrics.csv parses."""
    from src.training.utils import load_checkpoint

    for ckpt in (run / "checkpoints").glob("*.pt"):
        load_checkpoint(ckpt)  # raises CheckpointError for a torn file
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv") as fh:
            rows = list(csv.reader(fh))
        assert all(len(r) == len(rows[0]) for r in rows), "torn metrics.csv"


def _wait_for(proc: subprocess.Popen, done, timeout: float) -> bool:
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if done():
            return True
        time.sleep(0.002)
    return False


def _kill_when(kind: str, proc, run: Path, cache: Path, rng: random.Random, epoch_s: float):
    """Wait for the moment of ``kind``; True when it came (the child is then killed)."""
    start = time.time()
    rows = metric_rows(run / "metrics.csv")
    if kind.endswith("-write"):  # a temp file that a killed earlier launch did not leave
        folder = cache if kind == "cache-write" else run / "checkpoints"
        old = set(folder.rglob(".*.tmp"))
        return _wait_for(proc, lambda: bool(set(folder.rglob(".*.tmp")) - old), 300)
    if kind == "after-epoch":
        came = _wait_for(proc, lambda: metric_rows(run / "metrics.csv") > rows, 300)
        time.sleep(rng.uniform(0, 0.2))
        return came and proc.poll() is None
    # in-epoch: a random time once this launch has started training (config.yaml rewritten)
    started = _wait_for(
        proc,
        lambda: (run / "config.yaml").is_file() and (run / "config.yaml").stat().st_mtime > start,
        300,
    )
    time.sleep(rng.uniform(0, 1.5 * epoch_s))
    return started and proc.poll() is None


def stress(
    config: Path, out: Path, kills: int, seed: int, epochs: int, schedule: list[str] | None = None
) -> dict:
    """Kill a run ``kills`` times and finish it; returns figures. Raises AssertionError.

    ``schedule`` fixes the kind of each kill (default: drawn from ``KINDS`` with the seed)."""
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    runs = Path(yaml.safe_load(config.read_text())["logging"]["output_dir"])
    common = ["--set", f"train.epochs={epochs}", "data.cache=disk", "train.patience=100"]

    def launch(name: str, resume: bool, log: Path, cache_dir: Path) -> subprocess.Popen:
        args = [*(["--resume"] if resume else []), *common]
        args += [f"logging.run_name={name}", f"data.cache_dir={cache_dir}"]
        with open(log, "w") as fh:
            return subprocess.Popen(
                train_cmd(config) + args, env=env, stdout=fh, stderr=subprocess.STDOUT
            )

    t0 = time.time()
    ref = launch("ref", False, out / "ref.log", out / "cache-ref")
    assert ref.wait(timeout=900) == 0, (out / "ref.log").read_text()[-3000:]
    epoch_s = (time.time() - t0) / epochs
    run, cache = runs / "victim", out / "cache-victim"
    rng = random.Random(seed)
    done, stuck, launches, moments, damaged = 0, 0, 0, [], 0
    damaged_at = rng.randrange(1, kills) if kills > 1 else -1
    while True:
        resume = (run / "checkpoints" / "last.pt").is_file()
        entries = sorted(cache.rglob("*.pt"))
        if launches >= damaged_at and entries and not damaged:  # a disk fault in the cache
            entries[0].write_bytes(entries[0].read_bytes()[: entries[0].stat().st_size // 3])
            damaged = launches
        log = out / f"victim-{launches}.log"
        proc = launch("victim", resume, log, cache)
        launches += 1
        if done == kills:
            assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
            break
        before = metric_rows(run / "metrics.csv")
        kind = "after-epoch" if stuck >= 2 else rng.choice(KINDS)
        kind = "cache-write" if done == 0 else kind  # the first kill: mid first cache epoch
        kind = schedule[done] if schedule else kind
        if kind == "cache-write" and any(cache.rglob("*.pt")) and resume:
            kind = "in-epoch"  # the cache is complete after the first epoch
        came = _kill_when(kind, proc, run, cache, rng, epoch_s)
        if proc.poll() is not None:  # finished before the moment came: nothing left to kill
            assert proc.returncode == 0, log.read_text()[-3000:]
            print(f"the run finished after {done} of {kills} kills: raise --epochs", flush=True)
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done += 1
        moments.append(kind if came else f"{kind}(timeout)")
        check_intact(run)
        stuck = stuck + 1 if metric_rows(run / "metrics.csv") <= before else 0
    rebuilt = sum("disk cache entry" in p.read_text() for p in out.glob("victim-*.log"))
    same = (run / "metrics.csv").read_text() == (runs / "ref" / "metrics.csv").read_text()
    assert same, "metrics.csv differs from the uninterrupted run"
    assert (run / "checkpoints" / "final.pt").is_file()
    return {
        "kills": done,
        "moments": moments,
        "launches": launches,
        "cache_rebuilds_logged": rebuilt,
        "damaged_cache_before_launch": damaged,
        "seconds": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="sigkill-"))
    out.mkdir(parents=True, exist_ok=True)
    from src.data.phantom import generate_phantom_ct
    from tests.conftest import tiny_raw_config

    phantom = out / "phantom"
    if not (phantom / "labels.csv").is_file():
        generate_phantom_ct(phantom, n_patients=12, seed=3, progress=False)
    config = out / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config(phantom, out)))
    result = stress(config, out, args.kills, args.seed, args.epochs)
    print(yaml.safe_dump(result, sort_keys=False))


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.argv.remove("--child")
        sys.exit(child_main(sys.argv[1:]))
    main()
