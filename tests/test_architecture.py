"""The package's shape, read from its source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bonecls"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, here: str, is_package: bool) -> list[str]:
    """Dotted names an import statement may load: for ``from a import b`` both ``a.b`` (if b is a
    module) and ``a``; relative imports resolved against the importing module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = here.split(".") if is_package else here.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """bonecls module -> the bonecls modules it imports, anywhere in its source (in functions and
    ``if TYPE_CHECKING:`` blocks too: an import that runs late is still an arrow)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py"):
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert sum(map(len, graph.values())) > 50, "the graph lost its arrows: the parser no longer sees imports"
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError("import cycle in bonecls: " + " -> ".join(exc.args[1])) from None
