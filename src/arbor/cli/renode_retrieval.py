"""``arbor renode ingest-examples|ingest-manual|search``: the generator's retrieval material.

Ingest fills the ``examples`` collection (C# peripheral models of a Renode checkout) and the
``manual`` collection (datasheet text) of the vector store: Milvus Lite under ``ARBOR_HOME``
or the server at ``ARBOR_MILVUS_URI``. Full-text (BM25) search needs no model; with
``--embeddings MODEL`` the collection also holds that model's vectors and searches are hybrid.
A bad path exits 2, an unreachable store exits 2 naming ``ARBOR_MILVUS_URI``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from arbor.cli._common import EXIT_ERROR, EXIT_USAGE, fail, settings_or_exit
from arbor.core.config import Settings
from arbor.core.errors import ArborError, ConfigError

if TYPE_CHECKING:
    from arbor.apps.renode.retrieval import IngestReport, RenodeRetrieval
    from arbor.llm import LLMClient

__all__ = ["register"]

T = TypeVar("T")
_out = Console(highlight=False, soft_wrap=True)

EmbeddingsOption = Annotated[
    str | None,
    typer.Option(
        "--embeddings",
        help="Also store dense vectors from this embeddings model (e.g. openai:text-embedding-3-"
        "small); searches then combine them with BM25. Default: BM25 only, offline.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the retrieval commands to the ``arbor renode`` group."""
    app.command("ingest-examples")(ingest_examples)
    app.command("ingest-manual")(ingest_manual)
    app.command("search")(search)


def ingest_examples(
    path: Annotated[Path, typer.Argument(help="A Renode checkout, a folder of *.cs, or a file.")],
    embeddings: EmbeddingsOption = None,
) -> None:
    """Index the C# peripheral models under PATH into the ``examples`` collection.

    In a Renode checkout only src/Emulator/Peripherals is read. Unchanged files add nothing
    when ingested again; changed files replace their chunks; deleted files lose theirs.
    """
    settings = settings_or_exit()

    async def work(r: RenodeRetrieval) -> IngestReport:
        return await r.ingest_examples(path)

    _print_report("examples", _run(settings, embeddings, work))


def ingest_manual(
    file: Annotated[Path, typer.Argument(help="Datasheet text: .txt, .md or .rst.")],
    embeddings: EmbeddingsOption = None,
) -> None:
    """Index a datasheet (as text) into the ``manual`` collection, chunked by headings."""
    settings = settings_or_exit()

    async def work(r: RenodeRetrieval) -> IngestReport:
        return await r.ingest_manual(file)

    _print_report("manual", _run(settings, embeddings, work))


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="examples or manual.")
    ] = "examples",
    k: Annotated[int, typer.Option("-k", help="How many hits.", min=1, max=100)] = 5,
    embeddings: EmbeddingsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Show the best chunks for QUERY (BM25; hybrid when the collection has vectors of the
    --embeddings model)."""
    from arbor.apps.renode.retrieval import EXAMPLES, MANUAL

    if collection not in (EXAMPLES, MANUAL):
        fail(f"--collection must be examples or manual, not {collection!r}", EXIT_USAGE)
    if not query.strip():
        fail("give a non-empty QUERY", EXIT_USAGE)
    settings = settings_or_exit()

    async def work(r: RenodeRetrieval) -> list[dict[str, object]]:
        hits = await r.search(collection, query, k)
        return [
            {"score": round(h.score, 4), "source": h.source, "title": h.title, "text": h.text}
            for h in hits
        ]

    rows = _run(settings, embeddings, work)
    if as_json:
        _out.print_json(json.dumps(rows))
        return
    if not rows:
        _out.print(f"no hits in {collection} (ingest something first?)")
        return
    for i, row in enumerate(rows, 1):
        title = f" ({row['title']})" if row["title"] else ""
        _out.rule(f"{i}. {row['score']:.3f}  {row['source']}{title}", align="left")
        _out.print(str(row["text"]), markup=False)


def _run(
    settings: Settings,
    embeddings: str | None,
    work: Callable[[RenodeRetrieval], Awaitable[T]],
) -> T:
    """Open the store (and an LLM client when embeddings are asked for), run, close."""
    from arbor.apps.renode.regmap import RenodeError

    try:
        return asyncio.run(_with_retrieval(settings, embeddings, work))
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
    except RenodeError as exc:
        fail(str(exc), EXIT_USAGE)
    except ArborError as exc:
        fail(str(exc), EXIT_ERROR)


async def _with_retrieval(
    settings: Settings,
    embeddings: str | None,
    work: Callable[[RenodeRetrieval], Awaitable[T]],
) -> T:
    from arbor.apps.renode.retrieval import RenodeRetrieval, llm_embedder
    from arbor.store.vectors import VectorStore

    store = await asyncio.to_thread(VectorStore.open, settings)
    try:
        async with _embedder(settings, embeddings) as embed:
            retrieval = RenodeRetrieval(
                store,
                embed=llm_embedder(embed, embeddings) if embed and embeddings else None,
                embed_model=embeddings or "",
            )
            return await work(retrieval)
    finally:
        await asyncio.to_thread(store.close)


@asynccontextmanager
async def _embedder(settings: Settings, model: str | None) -> AsyncIterator[LLMClient | None]:
    if not model:
        yield None
        return
    from arbor.llm.setup import open_client

    async with open_client(settings) as client:
        yield client


def _print_report(collection: str, report: IngestReport) -> None:
    table = Table("collection", "files", "chunks", "added", "skipped (duplicates)", "removed")
    table.add_row(
        collection,
        str(report.files),
        str(report.chunks),
        str(report.added),
        str(report.skipped),
        str(report.removed),
    )
    _out.print(table)
    for line in report.passed_over[:20]:
        _out.print(f"passed over {line}", markup=False)
    _out.print(
        f"files {report.files}, chunks added {report.added}, skipped as duplicates "
        f"{report.skipped}, removed {report.removed}"
    )
