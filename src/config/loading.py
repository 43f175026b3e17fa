"""Read a run config: the YAML file, ``--set`` overrides, validation; and write the resolved
config back out (the run folder's ``config.yaml``)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from src.config.schema import Config, ConfigError
from src.config.validate import config_from_dict
from src.files import atomic_write

# the repository's own configs/, beside src/: found from any working folder
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _find_config(path: str | Path) -> Path:
    """``path`` itself, or for a bare name (``ct.yaml``, ``ct``) the first of
    ``./configs/<name>[.yaml]`` and ``<repository>/configs/<name>[.yaml]`` that exists."""
    path = Path(path)
    if path.is_file():
        return path
    if path.parent != Path("."):
        raise ConfigError(f"--config: file not found: {path}")
    names = [path.name] if path.suffix in (".yaml", ".yml") else [path.name, f"{path.name}.yaml"]
    folders = [Path("configs")]
    if Path("configs").resolve() != REPO_CONFIGS:
        folders.append(REPO_CONFIGS)
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    places = ["the working folder", *(f"{folder}/" for folder in folders)]
    raise ConfigError(
        f"--config: file not found: {path}; looked in {', '.join(places[:-1])} and {places[-1]}"
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; a syntax error names the file and line.

    A bare name (``ct.yaml`` or ``ct``) that is not a file here is looked up in ``configs/``
    of the working folder, then of the repository.
    """
    path = _find_config(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):  # !!python/object and friends
            raise ConfigError(
                f"{path}{where}: YAML tag not allowed:{problem.split(' for the tag')[-1]}; "
                "a config holds plain values only"
            ) from None
        raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are read as YAML (``[1,2]``, ``true``, ``3``)."""
    out = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        out.append((key.strip(), value))
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``KEY=VALUE`` of ``overrides`` (dotted key, YAML value) into ``raw``, creating
    missing sections; returns ``raw``. A key that passes through a value is a ConfigError."""
    for key, value in parse_overrides(overrides):
        *sections, leaf = key.split(".")
        node = raw
        for depth, name in enumerate(sections, start=1):
            if node.get(name) is None:
                node[name] = {}
            node = node[name]
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {'.'.join(sections[:depth])} is not a section")
        node[leaf] = value
    return raw


def add_override_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """The ``--set KEY=VALUE ...`` option of every command-line tool (repeatable; the values
    reach ``apply_overrides``)."""
    parser.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"override config values by dotted key, e.g. --set {example}",
    )


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (found as ``load_yaml`` finds it), apply ``key=value``
    overrides and validate the result."""
    return config_from_dict(apply_overrides(load_yaml(path), overrides or []))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml, checkpoints and W&B)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (a crash leaves no torn file)."""
    with atomic_write(path) as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
