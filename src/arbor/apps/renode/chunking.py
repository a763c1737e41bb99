"""Cutting retrieval material into chunks of about 1-2 KB that still read on their own.

C# peripheral models are cut along the syntax tree (tree-sitter-c-sharp): a small class is one
chunk; a larger one gives one chunk per run of members, and a member too large for a chunk is
cut between statements. Every chunk starts with a header naming the file and class, so a
search for ``STM32_UART`` or ``BRR`` finds it by name as well as by body.

Datasheet text is cut by headings (Markdown ``#`` lines, numbered ``3.2 USART registers`` lines
or short upper-case lines) into paragraphs, packed into chunks that overlap by one paragraph so
a fact split across a boundary is whole in one of them.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass

import tree_sitter_c_sharp
from tree_sitter import Language, Node, Parser

__all__ = ["TextChunk", "chunk_csharp", "chunk_manual", "split_identifier"]

#: Target chunk size in characters; a chunk may be up to MAX_CHARS.
TARGET_CHARS = 1500
MAX_CHARS = 2000
_LANGUAGE = Language(tree_sitter_c_sharp.language())
_TYPES = {
    "class_declaration",
    "struct_declaration",
    "interface_declaration",
    "enum_declaration",
    "record_declaration",
}
# nested types are chunks of their own; comments travel with the member below them
_SKIP = {*_TYPES, "comment"}
_HEADING_MD = re.compile(r"^\s{0,3}#{1,6}\s+\S")
_HEADING_NUM = re.compile(r"^\s*(\d+(\.\d+)*\.?|[A-Z]\.\d+(\.\d+)*)\s+[A-Z][^.!?]{1,80}$")


@dataclass(frozen=True)
class TextChunk:
    text: str
    #: The class (``Namespace.Type``) or section heading the chunk belongs to.
    title: str


def split_identifier(name: str) -> str:
    """``STM32_UARTModel`` → ``STM32 UART Model``: the words inside an identifier, for BM25."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(w for w in re.split(r"[\W_]+", spaced) if w)


# ---- C# ----------------------------------------------------------------------------------
def chunk_csharp(source: str, path: str) -> list[TextChunk]:
    """Chunks of one C# file, each headed by the file and its type's name."""
    tree = Parser(_LANGUAGE).parse(source.encode())
    types = [n for n in _walk_types(tree.root_node)]
    if not types:
        return [_headed(path, "", part) for part in _cut_lines(source)] if source.strip() else []
    chunks: list[TextChunk] = []
    for node, qualified in types:
        text = _member_text(node)
        if len(text) + 200 <= MAX_CHARS:
            chunks.append(_headed(path, qualified, text))
            continue
        body = node.child_by_field_name("body")
        members = [m for m in body.named_children if m.type not in _SKIP] if body else []
        head = text[: len(text) - (node.end_byte - body.start_byte)] if body else text
        for part in _pack([head.rstrip(), *(_member_text(m) for m in members)]):
            chunks.append(_headed(path, qualified, part))
    return chunks


def _walk_types(root: Node) -> list[tuple[Node, str]]:
    """Every type declaration with its qualified name (nested types are their own chunks)."""
    out: list[tuple[Node, str]] = []

    def visit(node: Node, prefix: str) -> None:
        for child in node.named_children:
            if child.type in ("namespace_declaration", "file_scoped_namespace_declaration"):
                name = child.child_by_field_name("name")
                visit(child, _join(prefix, _text(name) if name else ""))
            elif child.type == "declaration_list":
                visit(child, prefix)
            elif child.type in _TYPES:
                name = child.child_by_field_name("name")
                qualified = _join(prefix, _text(name) if name else "?")
                out.append((child, qualified))
                body = child.child_by_field_name("body")
                if body is not None:
                    visit(body, qualified)

    visit(root, "")
    return out


def _member_text(node: Node) -> str:
    """A member with the comments and attributes right above it."""
    start = node
    prev = node.prev_sibling
    while prev is not None and prev.type == "comment":
        start, prev = prev, prev.prev_sibling
    raw = (node.parent.text or b"") if node.parent else (node.text or b"")
    offset = node.parent.start_byte if node.parent else node.start_byte
    body = raw[start.start_byte - offset : node.end_byte - offset].decode(errors="replace")
    return " " * start.start_point.column + body  # so dedent sees the first line's indent


def _headed(path: str, qualified: str, body: str) -> TextChunk:
    name = qualified.rsplit(".", 1)[-1]
    words = split_identifier(name)
    header = f"// {path}" + (f" — {qualified} ({words})" if qualified else "")
    return TextChunk(text=f"{header}\n{_dedent(body)}", title=qualified)


def _pack(parts: list[str]) -> list[str]:
    """Consecutive parts joined up to TARGET_CHARS; a part over MAX_CHARS is cut first."""
    pieces = [p for part in parts if part.strip() for p in _cut_lines(_dedent(part))]
    return _greedy(pieces, TARGET_CHARS, "\n\n")


def _greedy(pieces: Iterable[str], limit: int, sep: str) -> list[str]:
    """Consecutive pieces joined with ``sep`` while the result stays within ``limit`` (a
    piece longer than that stands alone)."""
    out: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + len(sep) + len(piece) > limit:
            out.append(current)
            current = ""
        current = f"{current}{sep}{piece}" if current else piece
    if current:
        out.append(current)
    return out


def _cut_lines(text: str, limit: int = MAX_CHARS - 200) -> list[str]:
    """Cut at line ends, preferring the last statement end (``;``, ``{``, ``}``, blank)."""
    if len(text) <= limit:
        return [text]
    out: list[str] = []
    lines = text.splitlines()
    buf: list[str] = []
    size = 0
    last_boundary = 0
    for line in lines:
        for piece in [line[i : i + limit] for i in range(0, max(len(line), 1), limit)]:
            if buf and size + len(piece) + 1 > limit:
                cut = last_boundary if last_boundary > len(buf) // 3 else len(buf)
                out.append("\n".join(buf[:cut]))
                buf = buf[cut:]
                size = sum(len(b) + 1 for b in buf)
                last_boundary = 0
            buf.append(piece)
            size += len(piece) + 1
            if piece.rstrip().endswith((";", "{", "}")) or not piece.strip():
                last_boundary = len(buf)
    if buf:
        out.append("\n".join(buf))
    return [o for o in out if o.strip()]


def _dedent(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _text(node: Node | None) -> str:
    return (node.text or b"").decode(errors="replace") if node is not None else ""


# ---- datasheet text ------------------------------------------------------------------------
def chunk_manual(text: str) -> list[TextChunk]:
    """Chunks of a datasheet: sections by heading, paragraphs packed with one of overlap."""
    chunks: list[TextChunk] = []
    for heading, paragraphs in _sections(text):
        pieces = [p for para in paragraphs for p in _cut_words(para)]
        i = 0
        while i < len(pieces):
            body = [pieces[i]]
            size = len(pieces[i])
            j = i + 1
            while j < len(pieces) and size + len(pieces[j]) + 2 <= TARGET_CHARS:
                body.append(pieces[j])
                size += len(pieces[j]) + 2
                j += 1
            prefix = f"{heading}\n\n" if heading else ""
            chunks.append(TextChunk(text=prefix + "\n\n".join(body), title=heading))
            # overlap: the next chunk repeats this one's last paragraph when it was not alone
            i = j - 1 if j - i > 1 and j < len(pieces) else j
    return chunks


def _sections(text: str) -> list[tuple[str, list[str]]]:
    sections: list[tuple[str, list[str]]] = []
    heading = ""
    paragraphs: list[str] = []
    para: list[str] = []

    def end_paragraph() -> None:
        if para:
            paragraphs.append(" ".join(s.strip() for s in para))
            para.clear()

    for line in text.splitlines():
        if _is_heading(line):
            end_paragraph()
            if paragraphs:
                sections.append((heading, list(paragraphs)))
            paragraphs.clear()
            heading = line.strip().lstrip("#").strip()
        elif not line.strip():
            end_paragraph()
        else:
            para.append(line)
    end_paragraph()
    if paragraphs:
        sections.append((heading, paragraphs))
    return sections


def _is_heading(line: str) -> bool:
    stripped = line.strip()
    if not stripped or len(stripped) > 100:
        return False
    if _HEADING_MD.match(line) or _HEADING_NUM.match(stripped):
        return True
    letters = [c for c in stripped if c.isalpha()]
    return len(letters) >= 4 and stripped.isupper() and not stripped.endswith((".", ","))


def _cut_words(paragraph: str, limit: int = TARGET_CHARS) -> list[str]:
    """A paragraph longer than a chunk, cut between sentences (or words)."""
    if len(paragraph) <= limit:
        return [paragraph]
    units: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        units.extend([sentence] if len(sentence) <= limit else sentence.split())
    return _greedy((unit[:limit] for unit in units), limit, " ")
