"""Rules about how the code is arranged, checked on the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The one package allowed to import Ultralytics (AGPL-3.0).
ULTRALYTICS_HOME = REPO / "bonecls" / "detection"


def _ultralytics_product_sources() -> list[Path]:
    """Every Python file of what is shipped or run as the product: the library, the app, its pages,
    the training scripts and the helper scripts."""
    files = [*sorted((REPO / "bonecls").rglob("*.py")), REPO / "app.py"]
    for folder in ("pages", "train", "scripts"):
        files += sorted((REPO / folder).glob("*.py"))
    return files


def _ultralytics_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for each import of ``ultralytics`` or a submodule anywhere in ``path``: module
    level, inside functions and classes, and ``importlib.import_module`` / ``__import__`` of a literal."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [(node.lineno, n) for n in names if n.split(".")[0] == "ultralytics"]
    return found


def test_only_detection_imports_ultralytics() -> None:
    """Ultralytics is AGPL-3.0: only ``bonecls/detection/`` may import it, so the rest of bonecls (and a
    deployment that drops the detector) stays free of it (README, licence section).

    Walked: every module of bonecls/, app.py, pages/, train/ and scripts/. Not walked: tests/ and bench/,
    which import ultralytics directly on purpose and are never imported by the product:
    tests/appdata.py builds a random YOLOv8n with it, tests/test_detect.py checks our letterbox and
    offline settings against Ultralytics' own, and bench/bench_detect.py times plain Ultralytics as the
    baseline. Both import bonecls.detection freely.
    """
    sources = _ultralytics_product_sources()
    for folder in ("bonecls", "pages", "train"):  # the walk really covers each part of the product
        assert any(p.is_relative_to(REPO / folder) for p in sources), folder
    inside = [p for p in sources if p.is_relative_to(ULTRALYTICS_HOME)]
    # the scanner sees the imports it polices (offline.py imports ultralytics inside functions only)
    assert any(_ultralytics_imports(p) for p in inside)
    offenders = [
        f"{p.relative_to(REPO)}:{line} imports {name}"
        for p in sources
        if not p.is_relative_to(ULTRALYTICS_HOME)
        for line, name in _ultralytics_imports(p)
    ]
    assert offenders == [], "only bonecls/detection/ may import ultralytics (AGPL-3.0):\n" + "\n".join(
        offenders
    )


# --- no import cycle ------------------------------------------------------------------------

PACKAGE = REPO / "bonecls"


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


def test_forbidden_arrows() -> None:
    """The layering the map promises: decoding knows nothing of models, classifier inference nothing of the
    (AGPL) detector, and no module imports the app."""
    graph = import_graph()
    forbidden = [
        ("bonecls.imaging", ("bonecls.inference", "bonecls.models", "bonecls.weights", "bonecls.detection")),
        ("bonecls.inference", ("bonecls.detection", "bonecls.ui")),
        ("bonecls.detection", ("bonecls.ui",)),
        ("bonecls.training", ("bonecls.ui",)),
    ]
    broken = [
        f"{src} -> {dst}"
        for src, targets in graph.items()
        for dst in targets
        for low, banned in forbidden
        if (src == low or src.startswith(low + "."))
        and any(dst == b or dst.startswith(b + ".") for b in banned)
    ]
    assert graph.get("bonecls.imaging.load"), "the graph lost imaging's arrows"
    assert not broken, "forbidden imports: " + ", ".join(sorted(broken))
    # imaging must not import torch either (a decoder that needs no model must not pay for one)
    for path in (PACKAGE / "imaging").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "torch" not in names, f"{path.name} imports torch"
