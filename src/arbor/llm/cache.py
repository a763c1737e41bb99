"""The response cache: the same deterministic request gets the same reply without a call.

Tiers are tried in order — an in-memory LRU, then a SQLite file, then (distributed mode) a
shared Redis tier — and a hit in a lower tier is copied into the ones above it. Entries are
stored as the response's JSON bytes, so every hit is a fresh object (a caller that edits its
reply cannot corrupt the cache), memory holds compact bytes, and all tiers share one format.
A :class:`Tier` is a name and three synchronous methods that run on the event loop, so a
tier must answer in microseconds (memory, local SQLite). A network tier is a
:class:`RemoteTier` (async methods) tried after them by :meth:`ResponseCache.aget` and
:meth:`ResponseCache.aput`, the path the client uses.

SQLite reads happen inline (WAL mode: a read never waits for the writer; ~10 µs warm);
writes go to one owned background thread that batches them into transactions,
so :meth:`ResponseCache.put` costs a queue append. ``close()`` flushes and joins it.

Keys (:func:`cache_key`) hash a canonical JSON of exactly the request fields that change the
reply; ``cache`` and ``context`` (who asked) are left out, so two users share hits.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from arbor.core.clock import Clock, SystemClock
from arbor.core.config import CacheSettings
from arbor.llm.types import ChatRequest, ChatResponse, StreamChunk, ToolCallDelta

__all__ = [
    "MemoryTier",
    "RemoteTier",
    "ResponseCache",
    "SQLiteTier",
    "Tier",
    "TierStats",
    "cache_key",
    "replay_stream",
    "should_cache",
]

log = structlog.get_logger("arbor.llm.cache")

#: Bumped whenever the canonical form changes, so old entries are simply never found.
_KEY_PREFIX = b"arbor.chat.v1\n"
#: Pieces a cached reply's text is replayed in (streaming clients expect more than one).
_REPLAY_PIECES = 4


def _dumps_std(data: object) -> bytes:
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


try:  # orjson is ~2.5x faster here; either encoder is canonical (keys sorted, no spaces)
    import orjson

    def _dumps(data: object) -> bytes:
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # e.g. integers beyond 64 bits inside a JSON schema
            return _dumps_std(data)

except ImportError:  # pragma: no cover - depends on the environment
    _dumps = _dumps_std


def cache_key(request: ChatRequest) -> str:
    """SHA-256 of the canonical form of everything in ``request`` that affects the reply.

    Positional arrays instead of objects keep it short and fast; nested dicts (tool schemas,
    ``response_format``) are key-sorted so their order does not matter.
    """
    r = request
    messages = [
        (
            m.role,
            m.content,
            m.name,
            m.tool_call_id,
            None if m.tool_calls is None else [(c.id, c.name, c.arguments) for c in m.tool_calls],
        )
        for m in r.messages
    ]
    tools = (
        None
        if r.tools is None
        else [(t.name, t.description, t.parameters, t.strict) for t in r.tools]
    )
    payload = (
        r.model,
        messages,
        r.temperature,
        r.top_p,
        r.max_tokens,
        r.stop,
        r.seed,
        tools,
        r.tool_choice,
        r.response_format,
    )
    return hashlib.sha256(_KEY_PREFIX + _dumps(payload)).hexdigest()


def should_cache(request: ChatRequest, settings: CacheSettings) -> bool:
    """An explicit ``request.cache`` wins; otherwise only replies that do not vary between
    calls are cached (temperature 0), unless ``cache_sampling`` is set."""
    if not settings.enabled or request.cache is False:
        return False
    if request.cache:
        return True
    return settings.cache_sampling or not request.is_sampling


async def replay_stream(response: ChatResponse) -> AsyncIterator[StreamChunk]:
    """A cached reply as a stream: the text in a few pieces, one delta per tool call, then
    a final chunk with the finish reason and usage. Every chunk says ``cached=True``."""
    rid, model = response.id, response.model
    text = response.message.content or ""
    if text:
        size = math.ceil(len(text) / _REPLAY_PIECES)
        for start in range(0, len(text), size):
            yield StreamChunk(id=rid, model=model, content=text[start : start + size], cached=True)
    for index, call in enumerate(response.message.tool_calls or ()):
        delta = ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments)
        yield StreamChunk(id=rid, model=model, tool_calls=[delta], cached=True)
    yield StreamChunk(
        id=rid,
        model=model,
        finish_reason=response.finish_reason,
        usage=response.usage.model_copy(),
        cost_usd=response.cost_usd,
        cached=True,
    )


class Tier(Protocol):
    """One storage level. Values are a response's JSON bytes; ``expires_at`` is wall time."""

    name: str

    def get(self, key: str) -> tuple[float, bytes] | None:
        """``(expires_at, body)`` of a live entry, or ``None``."""
        ...

    def put(self, key: str, body: bytes, expires_at: float) -> None: ...

    def close(self) -> None: ...


class RemoteTier(Protocol):
    """A tier behind a network round trip (Redis), shared by processes. Same values as
    :class:`Tier`; a failing server must read as a miss and drop writes, never raise."""

    name: str

    async def get(self, key: str) -> tuple[float, bytes] | None: ...

    async def put(self, key: str, body: bytes, expires_at: float) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class TierStats:
    hits: int = 0
    misses: int = 0


class MemoryTier:
    """A bounded LRU dict in this process. Thread-safe: batch threads may share it."""

    name = "memory"

    def __init__(self, max_entries: int, clock: Clock) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> tuple[float, bytes] | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] <= self._clock.time():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item

    def put(self, key: str, body: bytes, expires_at: float) -> None:
        with self._lock:
            self._data[key] = (expires_at, body)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            self._data.clear()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
"""
_Op = tuple[str, Any, Any, Any] | None  # ("put", key, body, expires) | ("delete", key, ...)


class SQLiteTier:
    """Entries in one SQLite file, at most ``max_entries`` (oldest evicted first).

    Reads run inline on a WAL database; writes are queued to a background thread that owns
    its own connection and commits in batches. Expired entries are skipped on read and
    deleted later. Eviction trims to 95% of the bound so it runs once per few thousand puts.
    """

    name = "disk"

    def __init__(self, path: Path, max_entries: int, clock: Clock) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_entries = max_entries
        self._clock = clock
        writer = self._connect()
        writer.executescript(_SCHEMA)
        self._count = writer.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        self._reader = self._connect()
        self._read_lock = threading.Lock()
        self._ops: queue.SimpleQueue[_Op | threading.Event] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._write_loop, args=(writer,), name=f"arbor-cache-{path.name}", daemon=True
        )
        self._closed = False
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a cache may lose its last writes on crash
        conn.execute("PRAGMA busy_timeout=2000")
        return conn

    def get(self, key: str) -> tuple[float, bytes] | None:
        try:
            with self._read_lock:
                row = self._reader.execute(
                    "SELECT expires_at, body FROM responses WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as exc:  # a broken cache must not fail the call: a miss
            log.warning("llm.cache.disk_read_failed", path=str(self.path), error=str(exc))
            return None
        if row is None:
            return None
        if row[0] <= self._clock.time():
            self._ops.put(("delete", key, None, None))
            return None
        return float(row[0]), bytes(row[1])

    def put(self, key: str, body: bytes, expires_at: float) -> None:
        if not self._closed:
            self._ops.put(("put", key, body, expires_at))

    def flush(self) -> None:
        """Block until every write queued so far is committed (tests, shutdown)."""
        if self._closed or not self._thread.is_alive():
            return
        done = threading.Event()
        self._ops.put(done)
        done.wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ops.put(None)
        self._thread.join()
        with self._read_lock:
            self._reader.close()

    def __len__(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    # ---- the writer thread ------------------------------------------------------------
    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                batch: list[_Op | threading.Event] = [self._ops.get()]
                while len(batch) < 512:
                    try:
                        batch.append(self._ops.get_nowait())
                    except queue.Empty:
                        break
                try:
                    self._apply(conn, [op for op in batch if isinstance(op, tuple)])
                finally:  # never leave a flush() waiting, even if a write failed
                    for op in batch:
                        if isinstance(op, threading.Event):
                            op.set()
                if None in batch:
                    return
        finally:
            conn.close()

    def _apply(self, conn: sqlite3.Connection, ops: list[tuple[str, Any, Any, Any]]) -> None:
        try:
            conn.execute("BEGIN")
            for kind, key, body, expires_at in ops:
                if kind == "put":
                    conn.execute(
                        "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                        (key, self._clock.time(), expires_at, body),
                    )
                    self._count += 1
                else:
                    conn.execute("DELETE FROM responses WHERE key = ?", (key,))
            if self._count > self.max_entries:
                self._evict(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # disk full, locked too long: the cache just forgets
            log.warning("llm.cache.disk_write_failed", path=str(self.path), error=str(exc))
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _evict(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM responses WHERE expires_at <= ?", (self._clock.time(),))
        count = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        target = max(1, int(self.max_entries * 0.95)) if count > self.max_entries else count
        if count > target:
            conn.execute(
                "DELETE FROM responses WHERE key IN "
                "(SELECT key FROM responses ORDER BY created_at LIMIT ?)",
                (count - target,),
            )
        self._count = min(count, target)


class ResponseCache:
    """Cached replies by :func:`cache_key`, across tiers, with hit/miss counts per tier.

    ``last_tier`` names the tier that served the latest hit (for metrics labels).
    """

    def __init__(
        self,
        tiers: Sequence[Tier],
        *,
        ttl_seconds: float,
        clock: Clock | None = None,
        remote: RemoteTier | None = None,
    ) -> None:
        self.tiers = tuple(tiers)
        self.remote = remote
        self.ttl_seconds = ttl_seconds
        self._clock = clock or SystemClock()
        self._stats = tuple(TierStats() for _ in self.tiers)
        self._remote_stats = TierStats()
        self.last_tier = ""  # set on every hit, read right after it (same thread)

    @classmethod
    def from_settings(
        cls,
        settings: CacheSettings,
        home: Path,
        *,
        clock: Clock | None = None,
        remote: RemoteTier | None = None,
    ) -> ResponseCache:
        """Memory LRU, then ``<home>/cache/llm-responses.sqlite3``, as configured, then
        ``remote`` if given (with ``disk`` off, Redis replaces the SQLite tier)."""
        clock = clock or SystemClock()
        tiers: list[Tier] = []
        if settings.memory_entries > 0:
            tiers.append(MemoryTier(settings.memory_entries, clock))
        if settings.disk and settings.disk_max_entries > 0:
            path = home / "cache" / "llm-responses.sqlite3"
            tiers.append(SQLiteTier(path, settings.disk_max_entries, clock))
        return cls(tiers, ttl_seconds=settings.ttl_seconds, clock=clock, remote=remote)

    def get(self, key: str) -> ChatResponse | None:
        for i, tier in enumerate(self.tiers):
            found = tier.get(key)
            if found is None:
                self._stats[i].misses += 1
                continue
            try:
                response = ChatResponse.model_validate_json(found[1])
            except ValidationError:  # written by an incompatible version: a miss
                self._stats[i].misses += 1
                continue
            self._stats[i].hits += 1
            for upper in self.tiers[:i]:
                upper.put(key, found[1], found[0])
            self.last_tier = tier.name
            return response
        return None

    async def aget(self, key: str) -> ChatResponse | None:
        """:meth:`get`, then the remote tier; a remote hit is copied into the local tiers."""
        found = self.get(key)
        if found is not None or self.remote is None:
            return found
        item = await self.remote.get(key)
        response = None
        if item is not None:
            try:
                response = ChatResponse.model_validate_json(item[1])
            except ValidationError:
                response = None
        if response is None:
            self._remote_stats.misses += 1
            return None
        self._remote_stats.hits += 1
        assert item is not None
        for upper in self.tiers:
            upper.put(key, item[1], item[0])
        self.last_tier = self.remote.name
        return response

    def put(self, key: str, response: ChatResponse) -> None:
        """Store a reply in every local tier; an errored reply (``finish_reason="error"``) is
        never stored, since replaying a failure would hide the recovery."""
        encoded = self._encode(response)
        if encoded is not None:
            for tier in self.tiers:
                tier.put(key, *encoded)

    async def aput(self, key: str, response: ChatResponse) -> None:
        """:meth:`put` into every tier, the remote one included."""
        encoded = self._encode(response)
        if encoded is None:
            return
        for tier in self.tiers:
            tier.put(key, *encoded)
        if self.remote is not None:
            await self.remote.put(key, *encoded)

    def _encode(self, response: ChatResponse) -> tuple[bytes, float] | None:
        if response.finish_reason == "error" or not (self.tiers or self.remote):
            return None
        return response.model_dump_json().encode(), self._clock.time() + self.ttl_seconds

    def stats(self) -> dict[str, TierStats]:
        """Hits and misses per tier name (a copy)."""
        stats = {
            t.name: TierStats(s.hits, s.misses)
            for t, s in zip(self.tiers, self._stats, strict=True)
        }
        if self.remote is not None:
            stats[self.remote.name] = TierStats(self._remote_stats.hits, self._remote_stats.misses)
        return stats

    def close(self) -> None:
        """Close the local tiers (the remote one needs :meth:`aclose`)."""
        for tier in self.tiers:
            tier.close()

    async def aclose(self) -> None:
        self.close()
        if self.remote is not None:
            await self.remote.aclose()
