"""The LLM layer's modules import each other without a cycle (TYPE_CHECKING imports too),
and only the package and the modules built over the client import ``arbor.llm.client``:
the pipeline and its accounting take the client's parts, not the client."""

from __future__ import annotations

import ast
from pathlib import Path

import arbor.llm

PACKAGE = Path(arbor.llm.__file__).parent
#: Modules that build or wrap clients: above the client, never imported by it.
ABOVE_CLIENT = {"arbor.llm", "arbor.llm.redis_backends", "arbor.llm.setup"}


def _module_name(path: Path) -> str:
    parts = ["arbor", "llm", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each arbor.llm module → the arbor.llm modules it imports (a name imported from a
    package counts as its submodule when there is one)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in files else base)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph[node]):
            found = visit(nxt)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        found = visit(start)
        if found:
            return found
    return None


def test_the_llm_layer_has_no_import_cycle() -> None:
    graph = _imports()
    assert "arbor.llm._pipeline" in graph["arbor.llm.client"]  # the walk sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_only_modules_above_the_client_import_it() -> None:
    importers = {m for m, deps in _imports().items() if "arbor.llm.client" in deps}
    assert importers <= ABOVE_CLIENT, sorted(importers - ABOVE_CLIENT)


def test_the_cycle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
