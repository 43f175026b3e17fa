"""The configuration reference (docs/CONFIG.md), generated from the schema so it cannot drift:
every key with its type, default, allowed values and the docstring under its field."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml

from src.config.schema import Config, Range
from src.files import atomic_write

REGENERATE = "python -m src.config --reference docs/CONFIG.md"


def _docstrings(cls: type) -> tuple[str, dict[str, str]]:
    """The class docstring and the docstring under each field, each joined into one line."""
    (node,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    assert isinstance(node, ast.ClassDef)
    fields = {}
    for stmt, after in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            fields[stmt.target.id] = " ".join(after.value.value.split())
    return " ".join((ast.get_docstring(node) or "").split()), fields


def _type_text(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _type_text(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is Literal:
        return type(args[0]).__name__
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    return "any" if tp is Any else tp.__name__


def _yaml_text(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _allowed_text(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        bounds = [a.text for a in args[1:] if isinstance(a, Range)]
        each = "each " if get_origin(args[0]) is list else ""
        return "; ".join(f"{each}{b}" for b in bounds) or _allowed_text(args[0])
    if origin in (Union, types.UnionType):  # e.g. true, false or auto
        return ", ".join("`true`, `false`" if a is bool else _allowed_text(a) for a in args)
    if origin is Literal:
        return ", ".join(f"`{_yaml_text(a)}`" for a in args)
    return ""


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def reference_sections(cls: type = Config, prefix: str = "") -> list[tuple[str, str, list]]:
    """``(section, its docstring, rows)`` depth first; a row is ``(key, type, default, allowed,
    meaning)``. A key or section without a docstring in the schema is a ValueError."""
    doc, docs = _docstrings(cls)
    if not doc:
        raise ValueError(f"{prefix or cls.__name__}: {cls.__name__} has no docstring")
    hints = typing.get_type_hints(cls, include_extras=True)
    rows, subsections = [], []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(hints[f.name]):
            subsections += reference_sections(hints[f.name], key)
            continue
        if not docs.get(f.name):
            raise ValueError(
                f"{key}: no docstring under the field in {inspect.getsourcefile(cls)}; "
                "add one line saying what the key does"
            )
        tp = hints[f.name]
        rows.append((key, _type_text(tp), _yaml_text(_default(f)), _allowed_text(tp), docs[f.name]))
    own = [(prefix, doc, rows)] if rows or not prefix else []
    return own + subsections


def render_reference() -> str:
    """docs/CONFIG.md as the schema defines it."""
    sections = reference_sections()
    _, intro, _ = sections[0]
    lines = [
        "# Configuration reference",
        "",
        f"Generated from `src/config/schema.py` by `{REGENERATE}`: edit the docstrings there "
        "and run that command; a test fails when this file is out of date.",
        "",
        f"{intro} Every key is optional unless its meaning says required. `--set KEY=VALUE` sets "
        "any key by its dotted name (the value is read as YAML: `--set data.spacing=[2,2,2]`). "
        "A wrong key, type or value stops the run with one line naming the key: "
        "`error: optim.lr: must be positive, got -1.0`.",
    ]
    for name, doc, rows in sections[1:]:
        lines += ["", f"## `{name}`", "", doc, "", "| key | type | default | allowed | meaning |"]
        lines.append("|---|---|---|---|---|")
        for key, type_text, default, allowed, meaning in rows:
            cells = [f"`{key}`", type_text, f"`{default}`", allowed, meaning]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m src.config", description="Write the configuration reference."
    )
    ap.add_argument("--reference", required=True, metavar="PATH", help="e.g. docs/CONFIG.md")
    args = ap.parse_args(argv)
    with atomic_write(Path(args.reference)) as fh:
        fh.write(render_reference())
    print(f"wrote {args.reference}")
    return 0
