"""A run killed with SIGKILL mid-epoch and resumed ends with the same metrics.csv."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch


def train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "src.training.trainer", "--config", str(config), *extra]


def rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path) as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


def test_sigkill_then_resume_matches_uninterrupted(tiny_config, tmp_path):
    _, config = tiny_config
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    common = ["--set", "train.epochs=4"]
    ref = subprocess.run(
        train_cmd(config, *common, "logging.run_name=ref"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr
    runs = Path(tiny_config[0].logging.output_dir)

    victim = runs / "victim"
    proc = subprocess.Popen(
        train_cmd(config, *common, "logging.run_name=victim"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while rows(victim / "metrics.csv") < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # now inside epoch 2
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (victim / "checkpoints" / "final.pt").exists()
    saved = torch.load(victim / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] < 4
    # what a kill inside an atomic write leaves, in the run folder and beside the checkpoints
    leftovers = [victim / ".loss_curve.png.k1ll.tmp", victim / "checkpoints" / ".last.pt.k1ll.tmp"]
    for tmp in leftovers:
        tmp.write_bytes(b"torn")

    res = subprocess.run(
        train_cmd(config, "--resume", *common, "logging.run_name=victim"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert f"resumed from {victim / 'checkpoints' / 'last.pt'}" in res.stdout
    assert rows(victim / "metrics.csv") == 4
    assert not any(tmp.exists() for tmp in leftovers)
    assert (victim / "metrics.csv").read_text() == (runs / "ref" / "metrics.csv").read_text()
