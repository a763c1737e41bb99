"""The vector store: text chunks in Milvus collections, searched by BM25 (always, offline) and
by dense vectors when a collection was created with them (hybrid search, RRF-merged).

Where the vectors live: a Milvus Lite data directory ``<ARBOR_HOME>/milvus.db`` by default, or
the Milvus server named by ``ARBOR_MILVUS_URI``. Dense vectors are computed by the caller (the
``llm`` layer's ``LLMClient.embed``) and handed in, so this module stays below ``llm``.

The API is synchronous, like pymilvus: async callers wrap calls in ``asyncio.to_thread``.
One store is safe to share between threads (pymilvus's gRPC channel is).

Milvus Lite holds a lock on its directory, so only one *process* may open it at a time (a
second one gets a :class:`~arbor.core.errors.ConfigError` saying so). Inside one process every
store on the same directory shares one embedded server, counted here and stopped when the last
store closes (milvus-lite runs it as in-process threads, so nothing outlives the process).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arbor.core.errors import ArborError, ConfigError

if TYPE_CHECKING:
    from pymilvus import MilvusClient

    from arbor.core.config import Settings

__all__ = [
    "Chunk",
    "Hit",
    "SyncResult",
    "VectorStore",
    "VectorStoreError",
    "chunk_id",
]

#: Largest chunk text accepted, in UTF-8 bytes (Milvus VARCHAR max_length).
MAX_TEXT_BYTES = 65_535
_MAX_SOURCE = 4096
_MAX_TITLE = 1024
_RRF_K = 60
_QUERY_CAP = 16_384  # Milvus's largest query result
_HEX = "0123456789abcdef"
_MODEL_PROPERTY = "arbor.dense_model"
_LOCK = threading.Lock()
# One embedded server per data directory per process, as milvus-lite's own server manager
# keeps them; the count lets the last store to close stop it.
_LITE_USERS: dict[str, int] = {}


class VectorStoreError(ArborError):
    """A vector store operation failed (the store was reachable when opened)."""

    kind = "vector_store"


@dataclass(frozen=True)
class Chunk:
    """A piece of text with where it came from. ``vector`` only for dense collections."""

    text: str
    source: str
    kind: str = ""
    title: str = ""
    index: int = 0
    vector: Sequence[float] | None = None

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class Hit:
    text: str
    source: str
    kind: str
    title: str
    index: int
    #: BM25 score (higher is better), or the RRF score of a hybrid search.
    score: float


@dataclass(frozen=True)
class SyncResult:
    added: int
    skipped: int
    removed: int = 0


def chunk_id(source: str, text: str) -> str:
    """The primary key: the same text from the same source is stored once."""
    return hashlib.sha256(f"{source}\0{text}".encode()).hexdigest()[:40]


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes (Milvus VARCHAR lengths are bytes)."""
    return text.encode()[:limit].decode(errors="ignore")


def _quote(value: str) -> str:
    return json.dumps(value)  # a Milvus string literal: double quotes, backslash escapes


class VectorStore:
    """Chunk collections over one pymilvus ``MilvusClient``; build with :meth:`open`."""

    def __init__(self, client: MilvusClient, *, uri: str, lite_path: str | None) -> None:
        self._client = client
        self.uri = uri
        self._lite_path = lite_path
        self._ready: set[str] = set()
        self._closed = False

    # ---- lifecycle -------------------------------------------------------------------
    @classmethod
    def open(cls, settings: Settings, *, timeout: float = 10.0) -> VectorStore:
        """The Milvus server at ``settings.milvus_uri``, else Milvus Lite under the home."""
        if settings.milvus_uri:
            return cls._open_server(settings.milvus_uri, timeout)
        return cls._open_lite(settings.home / "milvus.db", timeout)

    @classmethod
    def _open_server(cls, uri: str, timeout: float) -> VectorStore:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        shown = _mask(uri)
        try:
            client = MilvusClient(uri=uri, timeout=timeout)
        except MilvusException as exc:
            raise ConfigError(
                f"cannot reach the Milvus server ARBOR_MILVUS_URI={shown}: {exc.message}",
                variable="ARBOR_MILVUS_URI",
            ) from exc
        return cls(client, uri=shown, lite_path=None)

    @classmethod
    def _open_lite(cls, path: Path, timeout: float) -> VectorStore:
        from milvus_lite import server_manager_instance
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        key = str(path.resolve())
        hint = "; set ARBOR_HOME elsewhere or ARBOR_MILVUS_URI to a Milvus server"
        with _LOCK:
            if not _LITE_USERS.get(key):
                _check_lite_dir(path, hint)
            try:
                local = server_manager_instance.start_and_get_uri(key)
            except OSError as exc:
                raise ConfigError(
                    f"cannot open the Milvus Lite file {path}: {exc}{hint}",
                    variable="ARBOR_MILVUS_URI",
                ) from exc
            if local is None:
                raise ConfigError(
                    f"cannot open the Milvus Lite file {path}{hint}", variable="ARBOR_MILVUS_URI"
                )
            _LITE_USERS[key] = _LITE_USERS.get(key, 0) + 1
        try:
            client = MilvusClient(uri=local, timeout=timeout)
        except MilvusException as exc:
            _release_lite(key)
            raise ConfigError(
                f"cannot open the Milvus Lite file {path}: {exc.message}",
                variable="ARBOR_MILVUS_URI",
            ) from exc
        return cls(client, uri=str(path), lite_path=key)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()
        if self._lite_path is not None:
            _release_lite(self._lite_path)

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- collections -----------------------------------------------------------------
    def ensure_collection(
        self, name: str, *, dense_dim: int | None = None, dense_model: str = ""
    ) -> None:
        """Create ``name`` if missing (BM25 over ``text``; a dense field when ``dense_dim``),
        and load it. An existing collection keeps its shape: asking for another dense
        dimension is an error rather than a silently mixed index."""
        from pymilvus import DataType, Function, FunctionType

        with self._errors(name):
            if self._client.has_collection(name):
                have = self.dense_dim(name)
                if dense_dim is not None and have != dense_dim:
                    raise VectorStoreError(
                        f"collection {name!r} holds dense vectors of dimension {have}, not "
                        f"{dense_dim}; drop it (or use another ARBOR_HOME) to re-index"
                    )
            else:
                schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
                schema.add_field(
                    "text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True
                )
                schema.add_field("source", DataType.VARCHAR, max_length=_MAX_SOURCE)
                schema.add_field("kind", DataType.VARCHAR, max_length=64)
                schema.add_field("title", DataType.VARCHAR, max_length=_MAX_TITLE)
                schema.add_field("chunk", DataType.INT64)
                schema.add_field("sha", DataType.VARCHAR, max_length=64)
                schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
                schema.add_function(
                    Function(
                        name="text_bm25",
                        function_type=FunctionType.BM25,
                        input_field_names=["text"],
                        output_field_names=["sparse"],
                    )
                )
                index = self._client.prepare_index_params()
                index.add_index(
                    field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25"
                )
                if dense_dim is not None:
                    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dense_dim)
                    index.add_index(
                        field_name="dense", index_type="AUTOINDEX", metric_type="COSINE"
                    )
                self._client.create_collection(
                    name, schema=schema, properties={_MODEL_PROPERTY: dense_model}
                )
                # sync=False: building an index on an empty collection is immediate, and
                # pymilvus's wait asks for a timestamp Milvus Lite does not implement
                self._client.create_index(name, index, sync=False)
            if name not in self._ready:
                self._client.load_collection(name)
                self._ready.add(name)

    def has_collection(self, name: str) -> bool:
        with self._errors(name):
            return bool(self._client.has_collection(name))

    def drop_collection(self, name: str) -> None:
        with self._errors(name):
            self._client.drop_collection(name)
            self._ready.discard(name)

    def dense_dim(self, name: str) -> int | None:
        """The dense vectors' dimension, or None for a BM25-only collection."""
        with self._errors(name):
            desc = self._client.describe_collection(name)
        for fld in desc.get("fields", []):
            if fld.get("name") == "dense":
                return int(fld.get("params", {}).get("dim", 0))
        return None

    def dense_model(self, name: str) -> str:
        """The embeddings model the collection's dense vectors came from ("" when none)."""
        with self._errors(name):
            properties = self._client.describe_collection(name).get("properties") or {}
        return str(properties.get(_MODEL_PROPERTY, ""))

    # ---- writes ----------------------------------------------------------------------
    def sync_source(self, collection: str, source: str, chunks: Sequence[Chunk]) -> SyncResult:
        """Make ``source``'s chunks exactly ``chunks``: insert new ones, skip those already
        stored (same source and text), remove the ones the source no longer has."""
        self._load(collection)
        if any(c.source != source for c in chunks):
            raise ValueError(f"every chunk must come from {source!r}")
        # a source with two identical chunks stores the text once
        wanted = {chunk_id(c.source, c.text): c for c in chunks}
        existing = set(self._ids(collection, f"source == {_quote(source)}"))
        new = [c for cid, c in wanted.items() if cid not in existing]
        stale = sorted(existing - wanted.keys())
        self.add(collection, new)
        if stale:
            with self._errors(collection):
                self._client.delete(collection, ids=stale)
        return SyncResult(added=len(new), skipped=len(wanted) - len(new), removed=len(stale))

    def add(self, collection: str, chunks: Sequence[Chunk]) -> SyncResult:
        """Insert chunks not stored yet (by source and text); returns how many were new."""
        rows: dict[str, dict[str, Any]] = {}
        dense = self.dense_dim(collection) if chunks else None
        for c in chunks:
            if len(c.text.encode()) > MAX_TEXT_BYTES:
                raise ValueError(f"a chunk of {c.source} is over {MAX_TEXT_BYTES} bytes")
            if len(c.source.encode()) > _MAX_SOURCE:
                raise ValueError(f"a source name is over {_MAX_SOURCE} bytes: {c.source[:80]}...")
            row: dict[str, Any] = {
                "id": chunk_id(c.source, c.text),
                "text": c.text,
                "source": c.source,
                "kind": _clip(c.kind, 64),
                "title": _clip(c.title, _MAX_TITLE),
                "chunk": c.index,
                "sha": c.sha,
            }
            if dense is not None:
                if c.vector is None or len(c.vector) != dense:
                    raise ValueError(
                        f"collection {collection!r} needs a {dense}-dimensional vector per chunk"
                    )
                row["dense"] = [float(x) for x in c.vector]
            rows[row["id"]] = row
        if not rows:
            return SyncResult(added=0, skipped=0)
        present = set(self._ids(collection, f"id in {json.dumps(sorted(rows))}"))
        fresh = [r for cid, r in rows.items() if cid not in present]
        with self._errors(collection):
            for start in range(0, len(fresh), 256):
                self._client.insert(collection, fresh[start : start + 256])
        return SyncResult(added=len(fresh), skipped=len(chunks) - len(fresh))

    def delete_source(self, collection: str, source: str) -> int:
        """Remove every chunk of ``source``; returns how many there were."""
        self._load(collection)
        ids = self._ids(collection, f"source == {_quote(source)}")
        if ids:
            with self._errors(collection):
                self._client.delete(collection, ids=ids)
        return len(ids)

    # ---- reads -----------------------------------------------------------------------
    def count(self, collection: str) -> int:
        self._load(collection)
        with self._errors(collection):
            rows = self._client.query(collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def sources(self, collection: str) -> set[str]:
        """Every source with chunks in ``collection``. A Milvus query returns at most 16,384
        rows, so the rows are listed by content-hash prefix, splitting a full prefix again."""
        self._load(collection)
        out: set[str] = set()
        prefixes = list(_HEX)
        while prefixes:
            prefix = prefixes.pop()
            with self._errors(collection):
                rows = self._client.query(
                    collection,
                    filter=f'sha like "{prefix}%"',
                    output_fields=["source"],
                    limit=_QUERY_CAP,
                )
            if len(rows) >= _QUERY_CAP and len(prefix) < 6:
                prefixes += [prefix + h for h in _HEX]
                continue
            out.update(str(r["source"]) for r in rows)
        return out

    def search(
        self, collection: str, query: str, k: int = 5, *, vector: Sequence[float] | None = None
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query``: BM25, or BM25 and dense merged by reciprocal
        rank fusion when ``vector`` is given and the collection has dense vectors."""
        if k < 1:
            raise ValueError("k must be at least 1")
        if not query.strip():
            return []
        self._load(collection)
        fields = ["text", "source", "kind", "title", "chunk"]
        with self._errors(collection):
            if vector is not None and self.dense_dim(collection) is not None:
                from pymilvus import AnnSearchRequest, RRFRanker

                requests = [
                    AnnSearchRequest(
                        data=[query],
                        anns_field="sparse",
                        param={"metric_type": "BM25"},
                        limit=k * 2,
                    ),
                    AnnSearchRequest(
                        data=[[float(x) for x in vector]],
                        anns_field="dense",
                        param={"metric_type": "COSINE"},
                        limit=k * 2,
                    ),
                ]
                result = self._client.hybrid_search(
                    collection, requests, RRFRanker(_RRF_K), limit=k, output_fields=fields
                )
            else:
                result = self._client.search(
                    collection,
                    data=[query],
                    anns_field="sparse",
                    limit=k,
                    output_fields=fields,
                    search_params={"metric_type": "BM25"},
                )
        hits = [_hit(row) for row in result[0]] if result else []
        return sorted(hits, key=lambda h: h.score, reverse=True)

    # ---- internals -------------------------------------------------------------------
    def _ids(self, collection: str, expr: str) -> list[str]:
        self._load(collection)
        with self._errors(collection):
            rows = self._client.query(
                collection, filter=expr, output_fields=["id"], limit=_QUERY_CAP
            )
        return [str(r["id"]) for r in rows]

    def _load(self, collection: str) -> None:
        """Load ``collection`` for reads once (a reopened Milvus Lite starts released)."""
        if collection in self._ready:
            return
        with self._errors(collection):
            if not self._client.has_collection(collection):
                raise VectorStoreError(f"no collection {collection!r} (nothing stored there yet)")
            self._client.load_collection(collection)
        self._ready.add(collection)

    def _errors(self, collection: str) -> _Translate:
        if self._closed:
            raise VectorStoreError("the vector store is closed")
        return _Translate(collection, self.uri)


class _Translate:
    """Turn pymilvus's exceptions into :class:`VectorStoreError` naming the collection."""

    def __init__(self, collection: str, uri: str) -> None:
        self.collection = collection
        self.uri = uri

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        from pymilvus.exceptions import MilvusException

        if isinstance(exc, MilvusException):
            raise VectorStoreError(
                f"Milvus ({self.uri}), collection {self.collection!r}: {exc.message}"
            ) from exc


def _hit(row: dict[str, Any]) -> Hit:
    entity = row.get("entity", {})
    score = float(row.get("distance", 0.0))
    return Hit(
        text=str(entity.get("text", "")),
        source=str(entity.get("source", "")),
        kind=str(entity.get("kind", "")),
        title=str(entity.get("title", "")),
        index=int(entity.get("chunk", 0)),
        score=abs(score) if score < 0 else score,
    )


def _check_lite_dir(path: Path, hint: str) -> None:
    """Say clearly why a Lite directory cannot be opened (milvus-lite only logs it)."""
    import fcntl  # POSIX only, like milvus-lite's own lock

    problem = None
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create {path.parent}: {exc.strerror or exc}"
    if problem is None and path.exists() and not path.is_dir():
        problem = "it is not a Milvus Lite data directory"
    if problem is None and (path / "LOCK").exists():
        try:
            with (path / "LOCK").open("rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
        except BlockingIOError:
            problem = "another process (an arbor serve?) has it open; Milvus Lite is single-process"
        except OSError as exc:
            problem = exc.strerror or str(exc)
    if problem is not None:
        raise ConfigError(
            f"cannot open the Milvus Lite file {path}: {problem}{hint}",
            variable="ARBOR_MILVUS_URI",
        )


def _release_lite(key: str) -> None:
    from milvus_lite import server_manager_instance

    with _LOCK:
        left = _LITE_USERS.get(key, 1) - 1
        if left > 0:
            _LITE_USERS[key] = left
            return
        _LITE_USERS.pop(key, None)
        server_manager_instance.release_server(key)


def _mask(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri
    return f"{scheme}://***@{rest.rpartition('@')[2]}"
