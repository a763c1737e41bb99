"""Codebase context for a prompt: a tree-sitter-python pass over the caller's project.

The project is the nearest parent of the caller's file holding ``pyproject.toml``,
``setup.py``, ``setup.cfg`` or ``.git`` (else the file's directory). Every ``.py`` file there
(bounded; virtualenvs, caches and hidden directories skipped) yields its top-level functions
and classes (signature and first docstring line) and its imports. Functions whose names share
words with the requested names come first with their full source; the summary is cut to a
token budget counted with the model's tokenizer.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter_python
from tree_sitter import Language, Node, Parser

from arbor.llm.tokens import Tokenizer

__all__ = ["CodebaseIndex", "Symbol", "analyze_project", "project_root", "render_context"]

_LANGUAGE = Language(tree_sitter_python.language())
_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "build", "dist", "venv", "env"}
_MAX_FILES = 300
_MAX_FILE_BYTES = 200_000
_MAX_BODY_LINES = 40
_SIMILAR = 5


@dataclass(frozen=True, slots=True)
class Symbol:
    kind: str  # "function" | "class"
    name: str
    file: str
    line: int
    signature: str
    doc: str
    body: str


@dataclass(slots=True)
class CodebaseIndex:
    root: Path
    files: int = 0
    symbols: list[Symbol] = field(default_factory=list)
    imports: Counter[str] = field(default_factory=Counter)


def project_root(start: Path) -> Path:
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, *folder.parents):
        if any((candidate / m).exists() for m in _MARKERS):
            return candidate
    return folder


def _python_files(root: Path) -> list[Path]:
    found: list[Path] = []
    stack = [root]
    while stack and len(found) < _MAX_FILES:
        folder = stack.pop()
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name in _SKIP_DIRS or entry.is_symlink():
                continue
            if entry.is_dir():
                stack.append(entry)
            elif entry.suffix == ".py" and len(found) < _MAX_FILES:
                found.append(entry)
    return found


def analyze_project(root: Path) -> CodebaseIndex:
    index = CodebaseIndex(root=root)
    parser = Parser(_LANGUAGE)
    for path in _python_files(root):
        try:
            if path.stat().st_size > _MAX_FILE_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        index.files += 1
        rel = str(path.relative_to(root))
        tree = parser.parse(data)
        for node in tree.root_node.children:
            _visit(node, rel, data, index)
    return index


def _text(node: Node | None, data: bytes) -> str:
    return data[node.start_byte : node.end_byte].decode(errors="replace") if node else ""


def _visit(node: Node, rel: str, data: bytes, index: CodebaseIndex) -> None:
    if node.type == "decorated_definition":
        inner = node.child_by_field_name("definition")
        if inner is not None:
            _visit(inner, rel, data, index)
        return
    if node.type in ("import_statement", "import_from_statement"):
        module = node.child_by_field_name("module_name")
        if module is not None:
            index.imports[_text(module, data).split(".")[0]] += 1
        else:
            for name in node.children_by_field_name("name"):
                index.imports[_text(name, data).split(" ")[0].split(".")[0]] += 1
        return
    if node.type not in ("function_definition", "class_definition"):
        return
    symbol = _text(node.child_by_field_name("name"), data)
    body = node.child_by_field_name("body")
    header = data[node.start_byte : body.start_byte if body else node.end_byte]
    signature = " ".join(header.decode(errors="replace").split()).rstrip(":").strip()
    index.symbols.append(
        Symbol(
            kind="function" if node.type == "function_definition" else "class",
            name=symbol,
            file=rel,
            line=node.start_point[0] + 1,
            signature=signature,
            doc=_docstring(body, data),
            body="\n".join(_text(node, data).splitlines()[:_MAX_BODY_LINES]),
        )
    )


def _docstring(body: Node | None, data: bytes) -> str:
    if body is None or not body.children:
        return ""
    first = body.children[0]
    if first.type == "expression_statement" and first.children[0].type == "string":
        text = _text(first.children[0], data).strip("\"' \n")
        return text.splitlines()[0].strip() if text else ""
    return ""


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return {w for w in spaced.split("_") if len(w) > 1}


def similar(index: CodebaseIndex, names: list[str]) -> list[Symbol]:
    """Functions and classes sharing words with the requested names, best first."""
    wanted = set().union(*(_words(n) for n in names)) if names else set()
    scored = []
    for sym in index.symbols:
        words = _words(sym.name)
        overlap = len(words & wanted)
        if overlap:
            scored.append((overlap / len(words | wanted), sym))
    scored.sort(key=lambda pair: (-pair[0], pair[1].file, pair[1].line))
    return [sym for _, sym in scored[:_SIMILAR]]


def render_context(
    index: CodebaseIndex, names: list[str], tokenizer: Tokenizer, budget: int
) -> str:
    """The context text, sections in priority order, cut at ``budget`` tokens."""
    if budget <= 0 or (not index.symbols and not index.imports):
        return ""
    lines = [f"Project {index.root.name}: {index.files} Python files."]
    close = similar(index, names)
    if close:
        lines.append("Similar functions in the project:")
        for sym in close:
            lines += [f"# {sym.file}:{sym.line}", sym.body, ""]
    if index.imports:
        common = ", ".join(m for m, _ in index.imports.most_common(25))
        lines.append(f"Modules the project imports: {common}")
    lines.append("Symbols defined in the project:")
    for sym in index.symbols:
        doc = f"  # {sym.doc}" if sym.doc else ""
        lines.append(f"{sym.file}:{sym.line}: {sym.signature}{doc}")
    return _trim(lines, tokenizer, budget)


def _trim(lines: list[str], tokenizer: Tokenizer, budget: int) -> str:
    kept: list[str] = []
    used = 0
    for line in lines:
        cost = tokenizer.count(line) + 1
        if used + cost > budget:
            kept.append("... (trimmed to the context budget)")
            break
        kept.append(line)
        used += cost
    return "\n".join(kept)
