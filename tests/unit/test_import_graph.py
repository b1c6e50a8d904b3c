"""The gateway's module import graph, read from the source (docs/architecture/index.md;
docs/architecture/code-layout.md): no import cycle anywhere in gateway/, and nothing imports the composition root
(gateway/app.py) but the entry points.

Every import statement counts, function-level ones included (a lazy ``from .app import X`` inside a handler is
still a cycle, only a hidden one); imports under ``if TYPE_CHECKING:`` do not (they never run). ``from . import x``
is an edge to the submodule ``x`` when there is one, else to the package. A module's own parent packages are not
edges: Python runs a package's ``__init__`` before its submodules, which is not a dependency either way."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The only gateway modules that may import gateway.app: the entry points (tests and bench import it too).
ENTRY_POINTS = {"gateway.cli", "gateway.workers"}


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    found: dict[str, tuple[Path, bool]] = {}
    for path in sorted((root / "gateway").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node``, but the bodies of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking_only(child):
            for other in child.orelse:
                yield other
                yield from _statements(other)
            continue
        yield child
        yield from _statements(child)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module → the gateway modules it imports (anywhere in its code)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in _statements(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                submodules = [f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules]
                targets = submodules + ([source] if len(submodules) < len(node.names) else [])
            for target in targets:
                # "import gateway.x.y" names gateway.x.y; keep the longest known prefix
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scan_sees_the_imports_it_must():
    graph = import_graph()
    assert "gateway.keys" in graph["gateway.drain"]  # a top-level relative import
    assert "gateway.app" in graph["gateway.cli"]  # a function-level one
    assert "gateway.carriers.twiml" in graph["gateway.carriers.plivo"]  # "from .twiml import …"
    assert graph["gateway.keys"] == set()  # its imports are for type checkers only


def test_the_gateway_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found_however_deep_the_import_hides():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_only_the_entry_points_import_the_app_module():
    importers = {module for module, imported in import_graph().items() if "gateway.app" in imported}
    assert importers == ENTRY_POINTS


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports anywhere in ``path`` (``import aiohttp.web`` → ``aiohttp``)."""
    names: set[str] = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_carrier_dialects_do_no_io():
    # gateway/carriers is pure (docs/architecture/code-layout.md): the carriers' REST clients live in gateway/control.
    offenders = {
        str(path.relative_to(ROOT)): sorted(names)
        for path in sorted((ROOT / "gateway" / "carriers").rglob("*.py"))
        if (names := _third_party_imports(path) & {"asyncio", "aiohttp", "socket", "websockets", "requests"})
    }
    assert offenders == {}


def test_the_pure_module_check_sees_an_io_import(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import aiohttp.web\n    from asyncio import sleep\n", encoding="utf-8")
    assert _third_party_imports(module) >= {"aiohttp", "asyncio"}
