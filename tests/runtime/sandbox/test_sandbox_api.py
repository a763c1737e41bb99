"""arbor.runtime.sandbox's public surface and layering: ``__all__`` is sorted and exactly the
public names, the package imports only ``core`` and itself from arbor, and the launcher (run
as a standalone script) imports only the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import arbor.runtime.sandbox as sandbox

PACKAGE = Path(sandbox.__file__).parent
MODULES = {"config", "errors", "junit", "result", "sandbox", "workspace"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_all_is_sorted_and_exactly_the_public_names() -> None:
    names = sandbox.__all__
    assert names == sorted(names)
    public = {n for n in vars(sandbox) if not n.startswith("_")} - {"annotations"}
    assert set(names) == public - MODULES


def test_the_package_imports_only_core_and_itself() -> None:
    for path in PACKAGE.glob("*.py"):
        for name in _imports(path):
            if name.startswith("arbor"):
                assert name.startswith(("arbor.core", "arbor.runtime.sandbox")), (path, name)


def test_the_launcher_needs_only_the_standard_library() -> None:
    for name in _imports(PACKAGE / "_launcher.py"):
        assert name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, name
