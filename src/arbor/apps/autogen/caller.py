"""Who is importing: the caller's file found from the import stack, the names its import
statement asks for, and where those names are used in it.

The import system calls the finder with only the module name; which names a
``from arbor.autogen.tokens import a, b`` wants is read back from the caller's own source
(the frame that executed the import, found by skipping importlib's and this package's frames).
"""

from __future__ import annotations

import ast
import hashlib
import linecache
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

__all__ = ["CallSite", "CallerContext", "collect_sites", "find_caller", "import_names"]

_HERE = str(Path(__file__).resolve().parent)
_FACE = str(Path(__file__).resolve().parents[2] / "autogen")
_MAX_SITES = 30


@dataclass(frozen=True, slots=True)
class CallSite:
    name: str
    line: int
    #: The line itself.
    code: str
    #: The line and its neighbours, numbered.
    snippet: str


@dataclass(slots=True)
class CallerContext:
    """The importing file (``None`` when its source is unknown, e.g. ``python -c``)."""

    path: Path | None
    line: int
    source: str = ""
    tree: ast.Module | None = None
    sites: list[CallSite] = field(default_factory=list)

    def context_hash(self) -> str:
        """Stable while the way the caller uses the names stays the same."""
        text = "\n".join(f"{s.name}:{s.code.strip()}" for s in self.sites)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _skipped(filename: str) -> bool:
    if filename.startswith("<frozen importlib") or "importlib" in Path(filename).parts:
        return True
    resolved = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    return resolved.startswith((_HERE, _FACE))


def find_caller(depth: int = 1) -> CallerContext:
    """The innermost frame outside importlib and arbor.autogen, with its parsed source."""
    frame: FrameType | None = sys._getframe(depth)
    while frame is not None and _skipped(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return CallerContext(path=None, line=0)
    filename = frame.f_code.co_filename
    lines = linecache.getlines(filename, frame.f_globals)
    source = "".join(lines)
    tree: ast.Module | None = None
    if source:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            tree = None
    path = Path(filename) if not filename.startswith("<") else None
    return CallerContext(path=path, line=frame.f_lineno or 0, source=source, tree=tree)


def import_names(caller: CallerContext, fullname: str) -> tuple[list[str], dict[str, str]]:
    """Names the caller's import of ``fullname`` asks for, and their local aliases.

    ``from M import a as x`` gives ``["a"]`` and ``{"a": "x"}``; ``import M`` (or ``as m``)
    gives the attributes the file reads from it. Raises ``ImportError`` when the statement
    cannot be read back or asks for ``*``.
    """
    tree = caller.tree
    if tree is None:
        raise ImportError(
            f"arbor.autogen cannot tell which names to generate for {fullname!r}: the importing "
            "code's source is not available (import from a .py file)",
            name=fullname,
        )
    statements = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom | ast.Import) and _mentions(node, fullname)
    ]
    here = [n for n in statements if n.lineno <= caller.line <= (n.end_lineno or n.lineno)]
    for node in here or statements:
        if isinstance(node, ast.ImportFrom) and node.module == fullname:
            if any(a.name == "*" for a in node.names):
                raise ImportError(
                    f"arbor.autogen cannot generate 'from {fullname} import *': name the "
                    "functions you want",
                    name=fullname,
                )
            return [a.name for a in node.names], {a.name: a.asname or a.name for a in node.names}
    for node in here or statements:
        deeper = _deeper(node, fullname)
        if deeper:
            raise ImportError(
                f"arbor.autogen generates flat modules only: {deeper!r} is nested; use "
                f"'from {fullname} import ...' with one module level",
                name=fullname,
            )
        if isinstance(node, ast.Import):
            names = _attributes_read(tree, node, fullname)
            if names:
                return names, {n: n for n in names}
    raise ImportError(
        f"arbor.autogen cannot tell which names to generate for {fullname!r}: use "
        f"'from {fullname} import NAME' in {caller.path or 'the importing code'}",
        name=fullname,
    )


def _mentions(node: ast.Import | ast.ImportFrom, fullname: str) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").startswith(fullname)
    return any(a.name.startswith(fullname) for a in node.names)


def _deeper(node: ast.Import | ast.ImportFrom, fullname: str) -> str | None:
    modules = (
        [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    )
    return next((m for m in modules if m.startswith(fullname + ".")), None)


def _attributes_read(tree: ast.Module, node: ast.Import, fullname: str) -> list[str]:
    alias = next(a for a in node.names if a.name == fullname)
    prefix = alias.asname or fullname
    found: list[str] = []
    for sub in ast.walk(tree):
        if isinstance(sub, ast.Attribute) and ast.unparse(sub.value) == prefix:
            if not sub.attr.startswith("_") and sub.attr not in found:
                found.append(sub.attr)
    return found


def collect_sites(caller: CallerContext, aliases: dict[str, str]) -> list[CallSite]:
    """Where each requested name (by its local alias, or as ``module.name``) is used."""
    if caller.tree is None:
        return []
    lines = caller.source.splitlines()
    by_local = {local: name for name, local in aliases.items()}
    sites: list[CallSite] = []
    seen: set[tuple[str, int]] = set()
    for node in ast.walk(caller.tree):
        name: str | None = None
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            name = by_local.get(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in aliases:
            name = node.attr
        if not isinstance(node, ast.expr):
            continue
        if name is None or (name, node.lineno) in seen:
            continue
        seen.add((name, node.lineno))
        code = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
        sites.append(CallSite(name, node.lineno, code, _snippet(lines, node.lineno)))
    sites.sort(key=lambda s: (s.line, s.name))
    return sites[:_MAX_SITES]


def _snippet(lines: list[str], line: int) -> str:
    lo, hi = max(1, line - 1), min(len(lines), line + 1)
    return "\n".join(f"{n:>5}: {lines[n - 1]}" for n in range(lo, hi + 1))
