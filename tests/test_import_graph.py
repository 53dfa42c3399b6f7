"""The core's modules import each other without a cycle: each stands on the ones below it.

Every import counts, also one inside a function (an import put off to run time is still a
dependency, and the usual way a cycle hides)."""

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = "finetune_kit"


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that the file at ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                names = [base] if base else [alias.name for alias in node.names]
            elif node.level == 0 and base.startswith(f"{PACKAGE}."):
                names = [base.split(".")[1]]
            elif node.level == 0 and base == PACKAGE:
                names = [alias.name for alias in node.names]
            else:
                names = []
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".")[1] for alias in node.names if alias.name.startswith(f"{PACKAGE}.")]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {p.stem: p for p in (REPO / PACKAGE).glob("*.py") if p.stem != "__init__"}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle_through_a_late_import(tmp_path):
    (tmp_path / "a.py").write_text("from .b import x\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("def x():\n    from .c import y\n", encoding="utf-8")
    (tmp_path / "c.py").write_text("import finetune_kit.a\n", encoding="utf-8")
    (tmp_path / "d.py").write_text("from . import a\n", encoding="utf-8")
    modules = {"a", "b", "c", "d"}
    graph = {name: imported_modules(tmp_path / f"{name}.py", modules) for name in sorted(modules)}
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_of_the_core_imports_itself_back():
    graph = import_graph()
    assert {"api", "trainer", "modeling", "cli"} <= set(graph)  # the package was read
    assert cycles(graph) == []
