"""The package's import structure: no cycles between files or between packages, no import from a higher layer.

Layers, lowest first: ``common`` < ``processors``, ``datasets``, ``models`` < ``tasks``, ``runners`` <
``evaluation``, ``demo``, ``cli``. Every import counts, also one inside a function: a lazy import
is still a dependency. Only imports under ``if TYPE_CHECKING:`` (annotations, never run) are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent / "minigpt"
LAYERS = {
    "common": 0,
    "prompts": 0,
    "configs": 0,
    "recipes": 0,  # data only: the shipped train_configs/ and eval_configs/
    "processors": 1,
    "datasets": 1,
    "models": 1,
    "tasks": 2,
    "runners": 2,
    "evaluation": 3,
    "demo": 3,
    "cli": 3,
    "features": 3,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: Path, module: str, known: Set[str]) -> Set[str]:
    """The minigpt modules ``path`` imports (a name imported from a package resolves to its submodule if one)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(tree):  # drop `if TYPE_CHECKING:` bodies first
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("minigpt") and name != module:
                out.add(name)
    return out


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    return {m: _imports(p, m, set(mods)) for m, p in mods.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_packages(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """File graph without package ``__init__`` re-exports: a package importing its own submodules is no cycle."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycle_between_files():
    assert _cycles(_without_packages(_graph())) == []


def test_no_import_cycle_between_packages():
    graph = _graph()
    rooms: Dict[str, Set[str]] = {}
    for mod, deps in graph.items():
        rooms.setdefault(_room(mod), set()).update(_room(d) for d in deps if _room(d) != _room(mod))
    assert _cycles(rooms) == []


def test_no_import_from_a_higher_layer():
    bad = []
    for mod, deps in _graph().items():
        room = _room(mod)
        if room not in LAYERS:
            continue
        for dep in deps:
            dep_room = _room(dep)
            if dep_room in LAYERS and LAYERS[dep_room] > LAYERS[room]:
                bad.append(f"{mod} -> {dep}")
    assert bad == []


@pytest.mark.parametrize("room", sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("_")))
def test_every_room_has_a_layer(room):
    assert room in LAYERS, f"minigpt/{room}/ has no layer in tests/test_layers.py"


def test_no_module_over_450_lines():
    long = [f"{p.relative_to(ROOT.parent)} ({n})" for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450]
    assert long == []
