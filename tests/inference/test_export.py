"""Export to ONNX and TorchScript: outputs match PyTorch; the files carry their metadata."""

from __future__ import annotations

import numpy as np
import torch

from src.config import config_from_dict
from src.data.splits import run_splits
from src.data.transforms import build_augmentation, build_preprocessing, preprocessing_settings
from src.inference.export import exported_logits, main, read_metadata
from src.inference.predict import file_batches
from src.inference.runtime import load_run
from src.training.trainer import train_model
from tests.conftest import tiny_raw_config


def test_export_both_formats_match_pytorch_on_a_real_scan(tiny_run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["--run", str(tiny_run), "--format", "both", "--out", str(out)]) == 0
    assert "max |logit - PyTorch|" in capsys.readouterr().out
    run = load_run(tiny_run)
    records = run_splits(run.cfg, tiny_run, run.task)["test"][:2]
    pre = build_preprocessing(run.cfg)
    cast = build_augmentation(run.cfg, train=False)
    x = torch.stack([cast(pre({"image": r["image"]}))["image"] for r in records])
    with torch.no_grad():
        ref = run.model(x).numpy()
    for path in (out / "model.onnx", out / "model.torchscript.pt"):
        np.testing.assert_allclose(exported_logits(path, x), ref, atol=1e-4, rtol=0)
        meta = read_metadata(path)
        assert meta["class_names"] == run.cfg.class_names
        assert meta["preprocessing"] == preprocessing_settings(run.cfg)
        assert meta["activation"] == "sigmoid"
        assert set(meta["thresholds"]) == set(run.cfg.class_names)
        assert "val split" in meta["threshold_rule"]


def test_a_three_window_run_carries_its_channels_to_gradcam_predict_and_export(
    tiny_phantom, dicom_phantom, tmp_path
):
    raw = tiny_raw_config(tiny_phantom, tmp_path)
    raw["data"]["windows"] = ["lung", "mediastinum", [-500, 1300]]
    raw["train"]["epochs"] = 1
    raw["evaluation"] |= {"gradcam_per_group": 1}
    run_dir = tmp_path / "run"
    train_model(config_from_dict(raw), run_dir)
    assert list((run_dir / "eval-val").glob("gradcam*.png"))  # the report's Grad-CAM gallery
    run = load_run(run_dir)
    assert run.cfg.in_channels == 3
    series = sorted((dicom_phantom / "images").iterdir())[0]
    x = next(file_batches(run, [series], [], []))["image"]
    assert x.shape == (1, 3, *run.cfg.data.spatial_size)
    out = tmp_path / "export"
    assert main(["--run", str(run_dir), "--format", "both", "--out", str(out)]) == 0
    with torch.no_grad():
        ref = run.model(x).numpy()
    for path in (out / "model.onnx", out / "model.torchscript.pt"):
        np.testing.assert_allclose(exported_logits(path, x), ref, atol=1e-4, rtol=0)
        meta = read_metadata(path)
        assert meta["input_shape"][1] == 3
        assert meta["preprocessing"]["windows"] == [[-1000, 400], [-160, 240], [-500, 1300]]
