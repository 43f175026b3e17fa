"""Security: crafted checkpoints, cache entries and YAML run no code; no shell, no unsafe loaders
in the source; CSV paths stay under the data root unless the config allows absolute paths."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from src.config import ConfigError, config_from_dict, load_config
from src.data.records import read_records
from src.training.tasks import build_task
from src.training.utils import CheckpointError, load_checkpoint
from tests.test_bad_input import Case

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this writes ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format_version": 1, "model": {}, "x": Payload(marker)}, path)
    return path


def test_the_payload_is_live(tmp_path):
    """Without weights_only the crafted file does run code (so the tests below can fail)."""
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


def test_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_resume_from_crafted_checkpoint_runs_no_code(tmp_path, capsys):
    case = Case(tmp_path)
    marker = tmp_path / "pwned"
    crafted_checkpoint(tmp_path / "runs" / "r" / "checkpoints" / "last.pt", marker)
    code, _, err = case.run(capsys, "--resume")
    assert code == 2 and err.startswith("error: ") and "last.pt: cannot be read" in err
    assert not marker.exists()


def test_crafted_disk_cache_entry_runs_no_code(tmp_path, capsys):
    from src.data.disk_cache import CheckedPersistentDataset

    marker = tmp_path / "pwned"
    item = {"image": "x", "label": torch.zeros(1)}
    ds = CheckedPersistentDataset(
        [item],
        transform=lambda d: {**d, "image": torch.ones(2)},
        cache_dir=tmp_path / "cache",
        hash_func=lambda d: b"entry",
    )
    assert torch.equal(ds[0]["image"], torch.ones(2))  # writes the entry
    (entry,) = (tmp_path / "cache").glob("*.pt")
    torch.save(Payload(marker), entry)
    assert torch.equal(ds[0]["image"], torch.ones(2))  # rebuilt, not executed
    assert not marker.exists()
    assert "is damaged (UnpicklingError); rebuilding it" in capsys.readouterr().err


def test_yaml_tags_run_no_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"train:\n  epochs: !!python/object/apply:exec [\"open('{marker}','w')\"]\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml line 2: YAML tag not allowed"):
        load_config(path)
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_source_has_no_shell_and_no_unsafe_loader():
    banned = {"os.system", "os.popen", "eval", "exec", "pickle.load", "pickle.loads"}
    banned |= {"yaml.load", "yaml.unsafe_load", "yaml.full_load"}
    found = []
    files = [*(REPO / "src").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]
    assert len(files) > 10
    for path in files:
        for call, name in _calls(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO)}:{call.lineno} {name}"
            kwargs = {k.arg: k.value for k in call.keywords}
            if name in banned:
                found.append(where)
            if "shell" in kwargs and not (
                isinstance(kwargs["shell"], ast.Constant) and kwargs["shell"].value is False
            ):
                found.append(where + " shell=")
            if name == "torch.load" and not (
                isinstance(kwargs.get("weights_only"), ast.Constant)
                and kwargs["weights_only"].value is True
            ):
                found.append(where + " without weights_only=True")
    assert found == []


def test_absolute_csv_paths_need_the_config_switch(tmp_path, capsys):
    case = Case(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / "p0.nii.gz"
    case.image(0).rename(target)
    case.rows[0]["image"] = str(target)
    code, _, err = case.run(capsys)
    assert code == 2 and "row 2: image path" in err and "leads outside" in err
    case.raw["data"]["allow_absolute_paths"] = True
    case.raw["train"]["batch_size"] = 64  # stop right after the data checks
    case.run(capsys)
    cfg = config_from_dict(case.raw)
    assert read_records(cfg, build_task(cfg))[0]["image"] == str(target)
    case.rows[0]["image"] = "../elsewhere/p0.nii.gz"  # relative escapes stay refused
    code, _, err = case.run(capsys)
    assert code == 2 and "row 2: image path '../elsewhere/p0.nii.gz' leads outside" in err


def test_absolute_path_inside_the_root_is_accepted(tmp_path, capsys):
    case = Case(tmp_path)
    case.rows[0]["image"] = str(case.image(0))
    case.raw["train"]["batch_size"] = 64  # stop right after the data checks
    code, _, err = case.run(capsys)
    assert code == 2 and "train.batch_size" in err  # the path passed
    assert read_records(c := config_from_dict(case.raw), build_task(c))[0]["image"] == str(
        case.root / "p0.nii.gz"
    )
