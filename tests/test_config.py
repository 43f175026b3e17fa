"""Config loading: types, ranges, unknown keys and overrides fail with the dotted key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from src.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_overrides,
    save_config,
    show_progress,
)

BASE = {"data": {"csv": "x.csv", "image_root": ".", "label_columns": ["a"]}}
REPO = Path(__file__).resolve().parents[1]


def with_value(key: str, value) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    node = raw
    *parents, last = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return raw


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optim.lr", "fast", "optim.lr: expected a float, got 'fast'"),
        ("optim.lr", -1e-3, "optim.lr: must be positive"),
        ("train.epochs", 0, "train.epochs: must be >= 1"),
        ("train.epochs", 2.5, "train.epochs: expected an integer"),
        ("train.batch_size", "eight", "train.batch_size: expected an integer"),
        ("train.accumulate", 0, "train.accumulate: must be >= 1"),
        ("data.cache", "gpu", "data.cache: expected one of"),
        ("data.spatial_size", [64], "data.spatial_size: needs 2 (2D) or 3 (3D) sizes"),
        ("data.spacing", [1.0, 1.0], "data.spacing: needs 3 values"),
        ("data.split.val_fraction", 1.5, "data.split.val_fraction: must be in [0, 1)"),
        ("data.augment.flip_prob", 2, "data.augment.flip_prob: must be in [0, 1], got 2.0"),
        ("data.spatial_size", [64, 0, 48], "data.spatial_size[1]: must be positive, got 0"),
        ("optim.betas", [0.9, 1.0], "optim.betas[1]: must be in [0, 1), got 1.0"),
        ("evaluation.confidence", 1, "evaluation.confidence: must be in (0, 1), got 1.0"),
        ("train.num_workers", -2, "train.num_workers: must be >= -1, got -2"),
        ("train.lr", 0.1, "train.lr: unknown key"),
        ("model.nam", "resnet3d", "model.nam: unknown key"),
        ("train.monitor", "auc", "train.monitor: must name a logged metric"),
        ("train.pos_weight", "yes", "train.pos_weight: expected true or false"),
        ("optim.betas", [0.9], "optim.betas: two in [0, 1)"),
        ("train.device", "tpu", "train.device: expected auto, cpu or cuda"),
        ("model.freeze", "backbone", "model.freeze: freezes pretrained layers; set model.pre"),
        ("optim.backbone_lr_scale", 0.5, "optim.backbone_lr_scale: scales the learning rate"),
        ("optim.backbone_lr_scale", 0, "optim.backbone_lr_scale: must be in (0, 1], got 0.0"),
        ("data.uncertain_labels", "maybe", "data.uncertain_labels: expected one of 'error'"),
        ("data.windows", ["lung", "soft"], "data.windows[1]: unknown preset 'soft'; presets: lung"),
        ("data.windows", [[400, -1000]], "data.windows[0]: max must exceed min"),
        ("data.windows", [[0, 1, 2]], "data.windows[0]: expected [min, max] or a preset"),
    ],
)
def test_bad_value_names_the_key(key, value, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict(with_value(key, value))
    assert expected in str(err.value)


def test_unknown_labels_need_zero_one_cells():
    raw = with_value("data.missing_labels", "ignore")
    raw["data"] |= {"task": "multiclass", "class_names": ["x", "y"]}
    with pytest.raises(ConfigError, match=r"^data\.missing_labels: applies to 0/1 label cells"):
        config_from_dict(raw)


def test_missing_required_keys_are_named():
    with pytest.raises(ConfigError, match=r"data\.csv: is required"):
        config_from_dict({})


def test_yaml_float_without_dot_is_accepted():
    # PyYAML reads 3e-4 as a string; a float field must still take it.
    cfg = config_from_dict(with_value("optim.lr", "3e-4"))
    assert cfg.optim.lr == pytest.approx(3e-4)


def test_overrides_use_dotted_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    cfg = load_config(path, ["optim.lr=3e-4", "train.epochs=20", "data.spatial_size=[32,32,16]"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 20
    assert cfg.data.spatial_size == [32, 32, 16]
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["train.epochs"])


def test_apply_overrides_sets_dotted_keys_and_creates_sections():
    raw = {"data": {"csv": "x.csv", "split": None}, "optim": {"lr": 0.1}}
    out = apply_overrides(raw, ["data.split.seed=3", "train.epochs=2", "optim.betas=[0.8, 0.9]"])
    assert out is raw
    assert raw["data"] == {"csv": "x.csv", "split": {"seed": 3}}
    assert raw["train"] == {"epochs": 2}
    assert raw["optim"] == {"lr": 0.1, "betas": [0.8, 0.9]}
    assert apply_overrides({}, ["logging.run_name=", "train.eval_test=false"]) == {
        "logging": {"run_name": ""},
        "train": {"eval_test": False},
    }


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr.max=1", r"^optim\.lr\.max: optim\.lr is not a section"),
        ("data.csv.x.y=1", r"^data\.csv\.x\.y: data\.csv is not a section"),
        ("=3", r"^--set =3: expected KEY=VALUE"),
        ("train.epochs", r"^--set train\.epochs: expected KEY=VALUE"),
    ],
)
def test_apply_overrides_refuses_a_path_through_a_value(override, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides({"optim": {"lr": 0.1}, "data": {"csv": "x.csv"}}, [override])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  csv: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+: YAML syntax error"):
        load_config(path)


def test_shipped_configs_load():
    for name in ("configs/ct.yaml", "configs/ct_rate.yaml", "configs/ct_dicom.yaml"):
        cfg = load_config(name)
        assert cfg.data.label_columns
    assert load_config("configs/ct_dicom.yaml").in_channels == 3


def write_config(path: Path, epochs: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({**BASE, "train": {"epochs": epochs}}))


@pytest.mark.parametrize("name", ["mine.yaml", "mine"])
def test_bare_name_is_found_in_configs_of_the_working_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "configs" / "mine.yaml", epochs=3)
    assert load_config(name).train.epochs == 3


def test_a_file_in_the_working_folder_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "mine.yaml", epochs=4)
    write_config(tmp_path / "configs" / "mine.yaml", epochs=3)
    assert load_config("mine.yaml").train.epochs == 4


@pytest.mark.parametrize("name", ["ct.yaml", "ct"])
def test_bare_name_falls_back_to_the_repository_configs(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    expected = load_config(REPO / "configs" / "ct.yaml")
    assert load_config(name) == expected


def test_working_folder_configs_come_before_the_repository_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "configs" / "ct.yaml", epochs=3)
    assert load_config("ct").train.epochs == 3


def test_config_not_found_names_the_places_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config("nope.yaml")
    message = str(err.value)
    assert message.startswith("--config: file not found: nope.yaml; looked in the working")
    assert "configs/ and " in message and str(REPO / "configs") in message
    assert "\n" not in message


def test_a_path_with_a_folder_is_not_searched_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^--config: file not found: sub/ct\.yaml$"):
        load_config("sub/ct.yaml")


@pytest.mark.parametrize(
    ("progress", "terminal", "expected"),
    [
        ("auto", True, True),
        ("auto", False, False),
        (True, False, True),
        (False, True, False),
    ],
)
def test_progress_bars_follow_the_terminal_unless_set(monkeypatch, progress, terminal, expected):
    cfg = config_from_dict(with_value("logging.progress", progress))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    assert show_progress(cfg) is expected


def test_progress_defaults_to_auto_and_takes_only_true_false_or_auto():
    assert config_from_dict(BASE).logging.progress == "auto"
    with pytest.raises(
        ConfigError,
        match=r"^logging\.progress: expected true or false or one of .auto., got .yes.$",
    ):
        config_from_dict(with_value("logging.progress", "yes"))


def test_saved_config_loads_back_unchanged(tmp_path):
    cfg = load_config("ct.yaml", ["logging.progress=false", "data.spacing=[2, 2, 3]"])
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left


def test_a_failed_save_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    monkeypatch.setattr(yaml, "safe_dump", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        save_config(config_from_dict(BASE), path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
