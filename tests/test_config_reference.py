"""docs/CONFIG.md is what the schema generates, and every key in the schema has a meaning."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from src.config import Config
from src.config.reference import REGENERATE, main, reference_sections, render_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def test_config_reference_is_up_to_date():
    if DOC.read_text() != render_reference():
        pytest.fail(f"docs/CONFIG.md differs from the schema; regenerate it with `{REGENERATE}`")


def dotted_keys(obj, prefix=""):
    for name, value in vars(obj).items():
        key = f"{prefix}{name}"
        if hasattr(value, "__dataclass_fields__"):
            yield from dotted_keys(value, f"{key}.")
        else:
            yield key


def test_every_key_is_listed_once_with_a_meaning():
    rows = [row for _, _, rows in reference_sections() for row in rows]
    assert sorted(row[0] for row in rows) == sorted(dotted_keys(Config()))
    assert all(meaning for *_, meaning in rows)


def test_reference_states_types_defaults_and_allowed_values():
    rows = {row[0]: row[1:4] for _, _, rows in reference_sections() for row in rows}
    assert rows["data.split.strategy"] == (
        "str",
        "auto",
        "`auto`, `column`, `stratified`, `center_holdout`, `kfold`",
    )
    assert rows["optim.lr"] == ("float", "0.001", "positive")
    assert rows["data.split.val_fraction"] == ("float", "0.15", "[0, 1)")
    assert rows["data.spatial_size"] == ("list[int]", "[64, 64, 48]", "each positive")
    assert rows["logging.progress"] == ("bool | str", "auto", "`true`, `false`, `auto`")
    assert rows["train.amp"][2].endswith("`'off'`")  # YAML reads a bare off as false


@dataclass
class Undocumented:
    """A section with one key documented and one not."""

    documented: int = 0
    """What it does."""
    forgotten: int = 1


def test_a_key_without_a_docstring_fails():
    with pytest.raises(ValueError, match=r"^toy\.forgotten: no docstring under the field"):
        reference_sections(Undocumented, "toy")


def test_the_command_writes_the_reference(tmp_path, capsys):
    out = tmp_path / "CONFIG.md"
    assert main(["--reference", str(out)]) == 0
    assert out.read_text() == render_reference()
    assert REGENERATE in out.read_text().splitlines()[2]
