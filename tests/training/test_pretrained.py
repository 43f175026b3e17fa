"""Pretrained weights: matched by name and shape, reported in one line, refused when they belong
to another architecture, frozen or scaled as the config says, never reloaded over a resume."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import resnet10

from src.config import config_from_dict
from src.models import ModelError, create_model
from src.models.registry import head_keys
from src.training import pretrained as pretrained_module
from src.training.optim import build_optimization
from src.training.pretrained import load_pretrained
from src.training.trainer import main
from src.training.utils import load_checkpoint, save_checkpoint
from tests.conftest import tiny_raw_config

CLASSES = ["a", "b", "c"]
MEDICALNET_10 = {"depth": 10, "shortcut": "B", "downsample_bias": False}


def config(tmp_path, pretrained, params, **model):
    raw = tiny_raw_config(tmp_path, tmp_path)
    raw["data"]["label_columns"] = CLASSES
    raw["model"] = {"name": "resnet3d", "params": params, "pretrained": str(pretrained), **model}
    return config_from_dict(raw)


def build(cfg):
    args = ("resnet3d", 3, 1, len(cfg.class_names), cfg.data.spatial_size)
    return create_model(*args, **cfg.model.params), head_keys(*args, **cfg.model.params)


@pytest.fixture(scope="module")
def medicalnet_file(tmp_path_factory):
    """A state dict shaped like MedicalNet's resnet_10.pth: saved from a DataParallel model
    (``module.`` prefixes), under ``state_dict``, with a segmentation head and no classifier."""
    torch.manual_seed(1)
    net = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False, bias_downsample=False)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(32, 512, 3, 3, 3)
    state["module.conv_seg.0.bias"] = torch.randn(32)
    path = tmp_path_factory.mktemp("medicalnet") / "resnet_10.pth"
    torch.save({"state_dict": state}, path)
    return path, net.state_dict()


def test_medicalnet_state_dict_loads_by_name_with_one_summary_line(medicalnet_file, tmp_path):
    path, reference = medicalnet_file
    cfg = config(tmp_path, path, MEDICALNET_10)
    model, head = build(cfg)
    summary = load_pretrained(model, cfg, head)
    assert head == {"fc.weight", "fc.bias"}
    assert summary == (
        f"pretrained {path}: loaded {len(reference)} tensors; new 2 (fc.weight, fc.bias); "
        "skipped 2 (conv_seg.0.bias, conv_seg.0.weight: not in this model)"
    )
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in reference.items())


def test_shape_mismatch_outside_the_head_is_an_error(medicalnet_file, tmp_path):
    cfg = config(tmp_path, medicalnet_file[0], MEDICALNET_10 | {"conv1_kernel": 3})
    model, head = build(cfg)
    with pytest.raises(ModelError, match=r"conv1\.weight is \(64, 1, 7, 7, 7\) in .* but "):
        load_pretrained(model, cfg, head)


@pytest.mark.parametrize(
    ("source_classes", "head_loaded"), [(CLASSES, True), (["x", "y", "z"], False), (["a"], False)]
)
def test_head_is_reinitialised_when_the_classes_differ(tmp_path, source_classes, head_loaded):
    params = {"depth": 10, "widths": [4, 8, 8, 8]}
    source, _ = build(_classes(tmp_path, params, source_classes))
    ckpt = {"format_version": 1, "model": source.state_dict(), "class_names": source_classes}
    save_checkpoint(ckpt, tmp_path / "run" / "checkpoints" / "best.pt")
    cfg = config(tmp_path, tmp_path / "run", params)  # a run folder: its best.pt
    model, head = build(cfg)
    summary = load_pretrained(model, cfg, head)
    fc_equal = torch.equal(model.state_dict()["fc.weight"], source.state_dict()["fc.weight"])
    assert fc_equal == head_loaded
    assert ("head re-initialised" in summary) == (not head_loaded)
    assert torch.equal(model.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])


def _classes(tmp_path, params, classes):
    raw = tiny_raw_config(tmp_path, tmp_path)
    raw["data"]["label_columns"] = classes
    raw["model"] = {"name": "resnet3d", "params": params}
    return config_from_dict(raw)


def test_medicalnet_offline_is_one_line_naming_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):  # stands in for the download: tests never reach the network
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(pretrained_module, "get_pretrained_resnet_medicalnet", offline)
    cfg = config(tmp_path, "medicalnet", {"depth": 18, "shortcut": "A"})
    model, head = build(cfg)
    with pytest.raises(ModelError) as err:
        load_pretrained(model, cfg, head)
    message = str(err.value)
    assert "\n" not in message and "couldn't connect" in message
    assert "MedicalNet-Resnet18/resolve/main/resnet_18_23dataset.pth" in message
    assert "model.pretrained: pretrained/resnet_18_23dataset.pth" in message


def test_backbone_learning_rate_is_scaled(medicalnet_file, tmp_path):
    cfg = config(tmp_path, medicalnet_file[0], MEDICALNET_10)
    cfg.optim.backbone_lr_scale = 0.1
    model, head = build(cfg)
    optimizer, _ = build_optimization(cfg, model, 10, head)
    lrs = [(len(g["params"]), g["lr"]) for g in optimizer.param_groups]
    n_params = len(list(model.parameters()))
    assert lrs == [(2, cfg.optim.lr), (n_params - 2, pytest.approx(cfg.optim.lr * 0.1))]


def test_frozen_backbone_trains_and_a_resume_never_reloads_the_file(tiny_config, tmp_path):
    cfg, path = tiny_config
    source = create_model("resnet3d", 3, 1, 6, None, **cfg.model.params).state_dict()
    weights = tmp_path / "weights.pt"
    torch.save({f"module.{k}": v for k, v in source.items()}, weights)
    run = ["--config", str(path), "--set", "logging.run_name=ft", "model.freeze=backbone"]
    assert main([*run, f"model.pretrained={weights}", "train.epochs=1"]) == 0
    weights.unlink()  # a resume that read it again would fail
    assert main([*run, f"model.pretrained={weights}", "train.epochs=2", "--resume"]) == 0
    final = load_checkpoint(tmp_path / "runs" / "ft" / "checkpoints" / "final.pt")
    assert final["epoch"] == 2
    trained = final["model"]
    assert torch.equal(trained["conv1.weight"], source["conv1.weight"])  # frozen
    assert not torch.equal(trained["fc.weight"], source["fc.weight"])  # the head trained


def test_missing_pretrained_file_is_one_line_before_any_data(tiny_config, tmp_path, capsys):
    _, path = tiny_config
    assert main(["--config", str(path), "--set", f"model.pretrained={tmp_path}/no.pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: model.pretrained: {tmp_path}/no.pt is no file")
    assert "\n" not in err and not list(tmp_path.rglob("splits.json"))  # no data was read
