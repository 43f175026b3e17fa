"""Layers point one way: files -> config -> data -> models -> training -> evaluation / inference
/ reporting -> plan -> the trainer's entry point. The imports of every module under ``src/`` are
read with ``ast``: no module imports from a higher layer, none imports ``src`` lazily (inside a
function or class), and the module graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# (layer name, module prefixes); the longest matching prefix decides a module's layer
LAYERS = [
    ("files", ["src.files"]),
    ("config", ["src.config"]),
    ("data", ["src.data"]),
    ("models", ["src.models"]),
    ("training", ["src.training"]),
    ("evaluation / inference / reporting", ["src.evaluate", "src.inference", "src.reporting"]),
    ("plan", ["src.plan"]),  # `python -m src.plan`: fingerprint, rules, data-set report
    ("entry points", ["src.training.trainer"]),  # `python -m src.training.trainer`: fit + report
]


def layer_of(module: str) -> int:
    best, rank = "", -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, rank = p, i
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return rank


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, known: set[str]) -> tuple[set[str], list[str]]:
    """(``src`` modules imported at module level, ``src`` imports made inside a function or
    class). ``from src.x import y`` counts as ``src.x.y`` when that is a module."""
    tree = ast.parse(source)
    top, lazy = set(), []
    nested = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        for n in ast.walk(node)
    }
    package = module if module in {m.rsplit(".", 1)[0] for m in known} else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        names = [n for n in names if n == "src" or n.startswith("src.")]
        if id(node) in nested:
            lazy += names
        else:
            top.update(names)
    return top, lazy


def module_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    known = set(files)
    graph, lazy = {}, {}
    for module, path in files.items():
        top, inner = imports_of(path.read_text(), module, known)
        graph[module] = {t for t in top if t in known and t != module}
        if inner:
            lazy[module] = inner
    return graph, lazy


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if layer_of(b) > layer_of(a)
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_from_a_higher_layer():
    graph, _ = module_graph(SRC)
    assert len(graph) > 30  # the walk found the package
    assert upward_imports(graph) == []


def test_no_lazy_imports_of_src():
    _, lazy = module_graph(SRC)
    assert lazy == {}


def test_the_module_graph_has_no_cycle():
    graph, _ = module_graph(SRC)
    assert find_cycle(graph) is None


@pytest.mark.parametrize(
    ("source", "expected_upward", "expected_lazy"),
    [
        ("from src.training.loop import predict\n", 1, 0),  # data -> training: upward
        ("from src.config import Config\n", 0, 0),  # data -> config: downward
        ("def f():\n    from src.config import Config\n", 0, 1),  # lazy
    ],
)
def test_the_checks_catch_what_they_look_for(tmp_path, source, expected_upward, expected_lazy):
    root = tmp_path / "src"
    for rel in ("config.py", "data/__init__.py", "data/bad.py", "training/loop.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "data" / "bad.py").write_text(source)
    graph, lazy = module_graph(root)
    assert len(upward_imports(graph)) == expected_upward
    assert len(lazy.get("src.data.bad", [])) == expected_lazy


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
