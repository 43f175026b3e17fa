"""Read a run config: the YAML file, ``--set`` overrides, validation; and write the resolved
config back out (the run folder's ``config.yaml``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from src.config.schema import Config, ConfigError
from src.config.validate import config_from_dict


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are read as YAML (``[1,2]``, ``true``, ``3``)."""
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        key, text = pair.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        out.append((key.strip(), value))
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; a syntax error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
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


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply ``key=value`` overrides and validate the result."""
    raw = load_yaml(path)
    for key, value in parse_overrides(overrides or []):
        _set_dotted(raw, key, value)
    return config_from_dict(raw)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml, checkpoints and W&B)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
