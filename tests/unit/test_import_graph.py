"""First-party imports flow one way: no two modules of app/, model_store/ or bench/ import each other, directly
or through others.

Counted: module-level imports and those under `if TYPE_CHECKING:` (a type shared both ways is a cycle too).
Not counted: imports inside functions, which the offline commands use to load torch only when they run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("app", "model_store", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """First-party modules `path` imports at module level (TYPE_CHECKING blocks included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = (
                    ".".join([*base, node.module] if node.module else base) if node.level else node.module
                )
                found.add(str(module))
                found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {module for module in found if module in known and module != name}


def cycles() -> list[list[str]]:
    """Groups of modules that reach each other through imports (Tarjan's strongly connected components)."""
    paths = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}
    graph = {name: sorted(imported(path, name, set(paths))) for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = [stack.pop()]
            while group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            connect(node)
    return found


def test_no_first_party_import_cycles() -> None:
    assert cycles() == []


def test_the_check_sees_a_type_imported_both_ways(tmp_path: Path) -> None:
    """What readiness <-> service was: a TYPE_CHECKING import one way, a real import the other."""
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
    )
    (tmp_path / "b.py").write_text("from pkg.a import f\n\ndef g():\n    from pkg.c import h\n")
    known = {"pkg.a", "pkg.b", "pkg.c"}
    assert imported(tmp_path / "a.py", "pkg.a", known) == {"pkg.b"}
    assert imported(tmp_path / "b.py", "pkg.b", known) == {
        "pkg.a"
    }  # the function-level import is not counted
