"""Retrieval for the Renode generator: existing peripheral models (collection ``examples``,
from a user's Renode checkout) and datasheet text (collection ``manual``), searched to give
the agents prompt-ready context.

BM25 full-text search works offline with nothing to download. When an ``Embedder`` is given
at ingest, the collection also holds dense vectors from that embeddings model and searches
with the same model's query vector are hybrid (BM25 and dense, reciprocal rank fusion).

:class:`RenodeRetrieval`'s methods are async: the blocking pymilvus calls and the chunking
run in worker threads. :func:`fetch_context` is the blocking one-shot form for a caller that
already sits in a worker thread (the agent loop's ``reference``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from arbor.apps.renode.chunking import TextChunk, chunk_csharp, chunk_manual, split_identifier
from arbor.apps.renode.regmap import RegisterMap, RenodeError
from arbor.core.config import Settings, load_settings
from arbor.store.vectors import Chunk, Hit, SyncResult, VectorStore

if TYPE_CHECKING:
    from arbor.llm import LLMClient

__all__ = [
    "EXAMPLES",
    "MANUAL",
    "Embedder",
    "IngestReport",
    "RenodeRetrieval",
    "RetrievalError",
    "fetch_context",
    "llm_embedder",
]

EXAMPLES = "examples"
MANUAL = "manual"
#: Texts in, one vector per text out (e.g. ``LLMClient.embed`` with a fixed model).
Embedder = Callable[[list[str]], Awaitable[list[list[float]]]]
_SKIP_DIRS = {".git", "bin", "obj", "packages", "output", "build"}
_MAX_FILE_BYTES = 1_000_000
_MANUAL_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}


class RetrievalError(RenodeError):
    """Bad input to ingestion or search: a missing path, an unreadable or unsupported file."""


@dataclass
class IngestReport:
    files: int = 0
    chunks: int = 0
    added: int = 0
    skipped: int = 0
    #: Chunks dropped because their file changed or disappeared since the last ingest.
    removed: int = 0
    #: Files passed over, with why (too large, unreadable).
    passed_over: list[str] = field(default_factory=list)

    def count(self, result: SyncResult) -> None:
        self.added += result.added
        self.skipped += result.skipped
        self.removed += result.removed


class RenodeRetrieval:
    """The ``examples`` and ``manual`` collections of one :class:`VectorStore`."""

    def __init__(
        self, store: VectorStore, *, embed: Embedder | None = None, embed_model: str = ""
    ) -> None:
        if embed is not None and not embed_model:
            raise ValueError("an embedder needs the name of its model (embed_model)")
        self.store = store
        self._embed = embed
        self._embed_model = embed_model
        self._ensured: set[str] = set()

    # ---- ingest ----------------------------------------------------------------------
    async def ingest_examples(self, path: Path) -> IngestReport:
        """Index the C# peripheral models under ``path`` (a Renode checkout, any folder of
        ``*.cs`` files, or one file). Re-ingesting unchanged files adds nothing; a changed
        file's old chunks are replaced; files gone from under ``path`` lose theirs."""
        root, files = await asyncio.to_thread(_examples_plan, path)
        report = IngestReport()
        seen: set[str] = set()
        for file in files:
            text = await asyncio.to_thread(_read, file, report)
            if text is None:
                continue
            source = str(file)
            seen.add(source)
            pieces = await asyncio.to_thread(chunk_csharp, text, source)
            await self._sync(EXAMPLES, source, "csharp", pieces, report)
        if files != [root] and await asyncio.to_thread(self.store.has_collection, EXAMPLES):
            stored = await asyncio.to_thread(self.store.sources, EXAMPLES)
            for gone in sorted(s for s in stored if _under(s, root) and s not in seen):
                report.removed += await asyncio.to_thread(self.store.delete_source, EXAMPLES, gone)
        return report

    async def ingest_manual(self, file: Path) -> IngestReport:
        """Index datasheet text (.txt, .md, .rst); its previous chunks are replaced."""
        path, text = await asyncio.to_thread(_manual_text, file)
        report = IngestReport(files=1)
        pieces = await asyncio.to_thread(chunk_manual, text)
        await self._sync(MANUAL, str(path), "manual", pieces, report)
        return report

    async def _sync(
        self,
        collection: str,
        source: str,
        kind: str,
        pieces: list[TextChunk],
        report: IngestReport,
    ) -> None:
        vectors = await self._vectors([p.text for p in pieces]) if pieces else None
        if not await self._ensure(collection, vectors[0] if vectors else None):
            return
        chunks = [
            Chunk(
                text=p.text,
                source=source,
                kind=kind,
                title=p.title,
                index=i,
                vector=vectors[i] if vectors else None,
            )
            for i, p in enumerate(pieces)
        ]
        report.chunks += len(chunks)
        report.count(await asyncio.to_thread(self.store.sync_source, collection, source, chunks))

    async def _ensure(self, collection: str, sample: list[float] | None) -> bool:
        """Create or check ``collection`` for this embedder; False when it does not exist
        and there is nothing to create it from (an empty first file)."""
        if collection in self._ensured:
            return True
        store = self.store
        if await asyncio.to_thread(store.has_collection, collection):
            stored_model = await asyncio.to_thread(store.dense_model, collection)
            if stored_model != self._embed_model:
                built = f"with embeddings from {stored_model}" if stored_model else "for BM25 only"
                wanted = self._embed_model or "no embeddings model"
                raise RetrievalError(
                    f"collection {collection!r} was built {built}, not {wanted}; ingest with "
                    "the same model, or drop the collection (or use a new ARBOR_HOME) to rebuild"
                )
            await asyncio.to_thread(store.ensure_collection, collection)
        elif self._embed is not None and sample is None:
            return False
        else:
            dim = len(sample) if sample is not None else None
            await asyncio.to_thread(
                store.ensure_collection, collection, dense_dim=dim, dense_model=self._embed_model
            )
        self._ensured.add(collection)
        return True

    async def _vectors(self, texts: list[str]) -> list[list[float]] | None:
        if self._embed is None:
            return None
        vectors = await self._embed(texts)
        if len(vectors) != len(texts):
            raise RetrievalError(
                f"the embeddings model returned {len(vectors)} vectors for {len(texts)} texts"
            )
        return vectors

    # ---- search ----------------------------------------------------------------------
    async def search_examples(self, query: str, k: int = 5) -> list[Hit]:
        return await self.search(EXAMPLES, query, k)

    async def search_manual(self, query: str, k: int = 5) -> list[Hit]:
        return await self.search(MANUAL, query, k)

    async def search(self, collection: str, query: str, k: int = 5) -> list[Hit]:
        """The ``k`` best chunks; [] when nothing was ingested into ``collection`` yet."""
        if collection not in (EXAMPLES, MANUAL):
            raise RetrievalError(f"unknown collection {collection!r}: examples or manual")
        if k < 1:
            raise RetrievalError("k must be at least 1")
        if not await asyncio.to_thread(self.store.has_collection, collection):
            return []
        await asyncio.to_thread(self.store.ensure_collection, collection)
        vector = None
        if self._embed is not None:
            stored_model = await asyncio.to_thread(self.store.dense_model, collection)
            if stored_model and stored_model == self._embed_model:
                vector = (await self._embed([query]))[0]
        return await asyncio.to_thread(self.store.search, collection, query, k, vector=vector)

    async def context_for(
        self, target: RegisterMap | str, k: int = 4, *, max_chars: int = 6000
    ) -> str:
        """A prompt-ready block of the closest example models and datasheet passages for a
        register map (or a peripheral name / free text), at most ``max_chars`` long (about
        a quarter as many tokens). Empty when nothing relevant was ingested."""
        query = _query_for(target)
        examples, manual = await asyncio.gather(
            self.search(EXAMPLES, query, k), self.search(MANUAL, query, k)
        )
        sections = [
            ("Existing Renode peripheral models that may help", examples),
            ("Datasheet excerpts", manual),
        ]
        return _render(sections, max_chars)


def _query_for(target: RegisterMap | str) -> str:
    if isinstance(target, str):
        if not target.strip():
            raise RetrievalError("give a peripheral name or a description to search for")
        return f"{target} {split_identifier(target)}"
    words = [
        target.peripheral,
        split_identifier(target.peripheral),
        target.group,
        target.description,
    ]
    words += [i.name for i in target.interrupts]
    words += [r.name for r in target.registers[:24]]
    return " ".join(w for w in words if w)


def _render(sections: list[tuple[str, list[Hit]]], max_chars: int) -> str:
    """Hits in rank order, examples first, each whole or cut at a line, within the budget."""
    parts: list[str] = []
    left = max_chars
    for heading, hits in sections:
        if not hits or left < 200:
            continue
        block = [f"## {heading}"]
        left -= len(block[0]) + 1
        for hit in hits:
            label = f"--- {hit.source}" + (f" ({hit.title})" if hit.title else "") + " ---"
            room = left - len(label) - 2
            if room < 120:
                break
            text = hit.text if len(hit.text) <= room else _cut(hit.text, room)
            block.append(f"{label}\n{text}")
            left -= len(label) + len(text) + 2
        if len(block) > 1:
            parts.append("\n".join(block))
    return "\n\n".join(parts)


def _cut(text: str, room: int) -> str:
    marker = "\n[...]"
    head = text[: max(0, room - len(marker))]
    line_end = head.rfind("\n")
    return (head[:line_end] if line_end > room // 2 else head) + marker


def _examples_plan(path: Path) -> tuple[Path, list[Path]]:
    root = path.expanduser().resolve()
    if not root.exists():
        raise RetrievalError(f"no such file or directory: {path}")
    files = _csharp_files(root)
    if not files:
        what = "is not a C# file (*.cs)" if root.is_file() else "holds no C# files (*.cs)"
        raise RetrievalError(f"{path} {what}")
    return root, files


def _manual_text(file: Path) -> tuple[Path, str]:
    path = file.expanduser().resolve()
    if not path.is_file():
        raise RetrievalError(f"no such file: {file}")
    if path.suffix.lower() == ".pdf":
        raise RetrievalError(
            f"{file} is a PDF and no PDF reader is installed; convert it to text first "
            "(e.g. pdftotext -layout FILE.pdf FILE.txt) and ingest the .txt"
        )
    if path.suffix.lower() not in _MANUAL_SUFFIXES:
        raise RetrievalError(
            f"{file}: unsupported file type {path.suffix or '(none)'}; give a text file "
            f"({', '.join(sorted(_MANUAL_SUFFIXES))})"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RetrievalError(f"cannot read {file}: {exc.strerror or exc}") from exc
    if b"\0" in data[:4096]:
        raise RetrievalError(f"{file} is binary, not text")
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        raise RetrievalError(f"{file} is empty")
    return path, text


def _csharp_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.suffix == ".cs" else []
    peripherals = root / "src" / "Emulator" / "Peripherals"
    base = peripherals if peripherals.is_dir() else root
    return sorted(_walk_cs(base))


def _walk_cs(base: Path) -> Iterator[Path]:
    for path in base.rglob("*.cs"):
        if not _SKIP_DIRS.intersection(path.relative_to(base).parts[:-1]) and path.is_file():
            yield path


def _read(file: Path, report: IngestReport) -> str | None:
    try:
        if file.stat().st_size > _MAX_FILE_BYTES:
            report.passed_over.append(f"{file}: over {_MAX_FILE_BYTES // 1000} KB")
            return None
        text = file.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        report.passed_over.append(f"{file}: {exc.strerror or exc}")
        return None
    report.files += 1
    return text


def _under(source: str, root: Path) -> bool:
    return Path(source).is_relative_to(root)


def fetch_context(
    query: str, *, settings: Settings | None = None, k: int = 4, max_chars: int = 6000
) -> str:
    """Blocking one-shot :meth:`RenodeRetrieval.context_for` for the agent loop (call it in a
    worker thread): opens the configured store (``settings`` or the environment's), searches
    BM25-only, closes. '' when nothing was ever ingested (no store is created for that)."""
    settings = settings or load_settings()
    if not settings.milvus_uri and not (settings.home / "milvus.db").is_dir():
        return ""
    store = VectorStore.open(settings)
    try:
        return asyncio.run(RenodeRetrieval(store).context_for(query, k, max_chars=max_chars))
    finally:
        store.close()


def llm_embedder(client: LLMClient, model: str) -> Embedder:
    """An :data:`Embedder` over ``client.embed`` with one model (budgets, limits and retries
    apply as to any call of that client)."""

    async def run(texts: list[str]) -> list[list[float]]:
        response = await client.embed(model=model, input=texts)
        return response.vectors

    return run
