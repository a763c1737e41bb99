"""The house rules of ``src/arbor``: the layers of ARCHITECTURE.md hold (import-linter's
contract in pyproject.toml) and no module takes part in an import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]

#: Top to bottom, as ARCHITECTURE.md draws them; "|" separates independent siblings.
LAYERS = [
    "arbor.cli | arbor.autogen",
    "arbor.service | arbor.apps",
    "arbor.runtime",
    "arbor.agents | arbor.testing",
    "arbor.llm",
    "arbor.store",
    "arbor.core",
]


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _load_time_lines(path: Path) -> set[int]:
    """Lines of the imports a module runs when it is loaded: at module level (also inside
    ``try``/``if``/``with``), but not under ``if TYPE_CHECKING:`` nor inside a function."""
    lines: set[int] = set()
    body = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            lines.add(node.lineno)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                body += node.body
            body += node.orelse
        elif isinstance(node, ast.Try):
            body += [*node.body, *node.orelse, *node.finalbody]
            body += [s for h in node.handlers for s in h.body]
        elif isinstance(node, ast.With):
            body += node.body
    return lines


def import_edges(
    graph: grimp.ImportGraph, load_time: Callable[[str], set[int]] | None = None
) -> dict[str, set[str]]:
    """Each module's imports, plus the packages its load-time imports initialise first:
    importing ``a.b.c`` runs ``a.b``'s ``__init__`` unless the importer is inside ``a.b``
    (then it is initialising already). So a package whose ``__init__`` imports a module that
    imports a sibling package back is a cycle too (that one broke importing the dashboard
    before the routes). ``load_time(module)`` gives the lines of its load-time imports
    (default: all of them)."""
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        mine = set(_ancestors(module))
        targets = set(graph.find_modules_directly_imported_by(module))
        lines = load_time(module) if load_time is not None else None
        for target in list(targets):
            details = graph.get_import_details(importer=module, imported=target)
            if lines is not None and not any(d["line_number"] in lines for d in details):
                continue
            targets.update(p for p in _ancestors(target) if p not in mine and p != module)
        edges[module] = targets
    return edges


def _source_lines(module: str) -> set[int]:
    """Read from the file, never imported (importing could itself hit the cycle)."""
    base = ROOT / "src" / module.replace(".", "/")
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return _load_time_lines(path)


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert cycles({"a": ["b"], "b": [], "c": ["b"]}) == []


def test_a_package_init_that_imports_its_importer_back_is_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.routes", "p.routes.keys", "p.pages", "p.pages.keys"):
        graph.add_module(module)
    graph.add_import(importer="p.routes", imported="p.pages")  # routes' __init__ lists pages
    graph.add_import(importer="p.pages", imported="p.pages.keys")
    graph.add_import(importer="p.pages.keys", imported="p.routes.keys")  # runs p.routes first
    assert cycles(import_edges(graph)) == [["p.pages", "p.pages.keys", "p.routes"]]
    graph.remove_import(importer="p.routes", imported="p.pages")
    assert cycles(import_edges(graph)) == []


def test_load_time_imports_skip_type_checking_and_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"  # 1
        "import a\n"  # 2
        "if TYPE_CHECKING:\n"  # 3
        "    import b\n"  # 4
        "else:\n"  # 5
        "    import c\n"  # 6
        "try:\n"  # 7
        "    import d\n"  # 8
        "except ImportError:\n"  # 9
        "    import e\n"  # 10
        "def f():\n"  # 11
        "    import g\n",  # 12
        encoding="utf-8",
    )
    assert _load_time_lines(source) == {1, 2, 6, 8, 10}


def test_no_module_of_arbor_is_in_an_import_cycle() -> None:
    graph = grimp.build_graph("arbor")  # TYPE_CHECKING imports count: they tie modules too
    # A check over an empty or partial graph would pass for nothing.
    for layer in (p.strip() for line in LAYERS for p in line.split("|")):
        assert any(m == layer or m.startswith(f"{layer}.") for m in graph.modules), layer
    assert graph.direct_import_exists(importer="arbor.agents.agent", imported="arbor.agents._loop")
    found = cycles(import_edges(graph, _source_lines))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_layers_contract_is_the_architecture() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert [c["layers"] for c in contracts if c["type"] == "layers"] == [LAYERS]


def test_lint_imports_keeps_the_contract() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout
