"""Generated modules, kept: memory → disk under ``ARBOR_HOME/autogen`` → Redis when set.

An entry is keyed by module, requested names, description, the caller's context hash and the
model (:func:`cache_key`), so a new description or model never reuses old code. On disk each
entry is a readable ``<module>/<key12>.py`` a user can inspect or commit, listed in
``index.json`` with its key, names, model, usage and creation time (written atomically under
a file lock, so processes sharing a home keep each other's entries). Redis holds the same JSON
documents, so several machines share what one generated; a Redis that is down reads as a miss
and drops the write (a logged warning, at most once per ``quiet_seconds``), so an outage
degrades to the disk tier instead of failing the import.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["AutogenCache", "CacheEntry", "DiskTier", "ModuleUsage", "RedisTier", "cache_key"]

log = structlog.get_logger("arbor.autogen")


class ModuleUsage(BaseModel):
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: ModuleUsage) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd


class CacheEntry(BaseModel):
    key: str
    module: str
    #: Every name the module defines for its callers (requested now and before).
    names: list[str]
    description: str
    model: str
    context_hash: str
    code: str = ""
    created: float = Field(default_factory=time.time)
    usage: ModuleUsage = Field(default_factory=ModuleUsage)
    #: Where the readable copy lives (disk tier), if any.
    file: str | None = None

    def meta(self) -> dict[str, object]:
        return self.model_dump(exclude={"code"})


def cache_key(module: str, names: list[str], description: str, context: str, model: str) -> str:
    doc = json.dumps([module, sorted(set(names)), description, context, model])
    return hashlib.sha256(doc.encode()).hexdigest()


def _lineage(module: str, description: str, model: str) -> str:
    return hashlib.sha256(json.dumps([module, description, model]).encode()).hexdigest()[:24]


class DiskTier:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.root / ".lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        entries = data.get("entries", {}) if isinstance(data, dict) else {}
        return entries if isinstance(entries, dict) else {}

    def _write_index(self, entries: dict[str, dict[str, object]]) -> None:
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"entries": entries}, indent=1, sort_keys=True), "utf-8")
        os.replace(tmp, self.index_path)

    def entries(self) -> list[CacheEntry]:
        """Every entry's metadata (no code), oldest first."""
        found = [CacheEntry.model_validate(v) for v in self._read_index().values()]
        return sorted(found, key=lambda e: e.created)

    def load(self, meta: CacheEntry) -> CacheEntry | None:
        if not meta.file:
            return None
        try:
            code = (self.root / meta.file).read_text(encoding="utf-8")
        except OSError:
            return None
        return meta.model_copy(update={"code": code})

    def get(self, key: str) -> CacheEntry | None:
        raw = self._read_index().get(key)
        return self.load(CacheEntry.model_validate(raw)) if raw is not None else None

    def put(self, entry: CacheEntry) -> CacheEntry:
        rel = f"{entry.module}/{entry.key[:12]}.py"
        stored = entry.model_copy(update={"file": rel})
        with self._locked():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(entry.code, encoding="utf-8")
            os.replace(tmp, path)
            entries = self._read_index()
            entries[entry.key] = stored.meta()
            self._write_index(entries)
        return stored

    def latest(self, module: str, description: str, model: str) -> CacheEntry | None:
        mine = [
            e
            for e in self.entries()
            if e.module == module and e.description == description and e.model == model
        ]
        return self.load(mine[-1]) if mine else None

    def clear(self, module: str | None = None) -> list[CacheEntry]:
        """Drop every entry (of ``module``); returns what was dropped."""
        return self._drop(lambda key, raw: module is None or raw["module"] == module)

    def drop(self, key: str) -> bool:
        """Forget one entry and its file; False when it was not here."""
        return bool(self._drop(lambda k, raw: k == key))

    def _drop(self, chosen: Callable[[str, dict[str, object]], bool]) -> list[CacheEntry]:
        """Remove the chosen entries from the index, and their files."""
        with self._locked():
            entries = self._read_index()
            dropped = {k: v for k, v in entries.items() if chosen(k, v)}
            for key, raw in dropped.items():
                entries.pop(key)
                file = raw.get("file")
                if isinstance(file, str):
                    with contextlib.suppress(OSError):
                        (self.root / file).unlink()
            if dropped:
                self._write_index(entries)
        return [CacheEntry.model_validate(v) for v in dropped.values()]

    def of_module(self, module: str) -> list[CacheEntry]:
        """The entries of ``module`` (metadata only), newest first."""
        return [e for e in reversed(self.entries()) if e.module == module]

    def remove(self, module: str | None = None) -> list[CacheEntry]:
        """:meth:`clear`, then the module folders it left empty (``arbor autogen clear``)."""
        dropped = self.clear(module)
        with self._locked():
            for folder in {(self.root / e.file).parent for e in dropped if e.file}:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: a user's own file there stays
        return dropped


class RedisTier:
    """The shared tier: ``<prefix>:entry:<key>`` documents and ``<prefix>:latest:<lineage>``.

    ``get``/``latest``/``put`` never raise for a Redis that is down: a miss and a dropped
    write, warned about once per ``quiet_seconds``; ``clear`` (an explicit command) raises."""

    def __init__(
        self, redis: Redis, prefix: str = "arbor:autogen", *, quiet_seconds: float = 30.0
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self._quiet = quiet_seconds
        self._warned_at = -float("inf")

    def _warn(self, event: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self._quiet:
            self._warned_at = now
            log.warning(event, error=type(exc).__name__, detail=str(exc))

    async def get(self, key: str) -> CacheEntry | None:
        try:
            raw = await self.redis.get(f"{self.prefix}:entry:{key}")
        except (RedisError, OSError) as exc:
            self._warn("autogen.redis_read_failed", exc)
            return None
        return CacheEntry.model_validate_json(raw) if raw else None

    async def put(self, entry: CacheEntry) -> None:
        doc = entry.model_copy(update={"file": None}).model_dump_json()
        lineage = _lineage(entry.module, entry.description, entry.model)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self.prefix}:entry:{entry.key}", doc)
                pipe.set(f"{self.prefix}:latest:{lineage}", entry.key)
                pipe.sadd(f"{self.prefix}:module:{entry.module}", entry.key)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._warn("autogen.redis_write_failed", exc)

    async def latest(self, module: str, description: str, model: str) -> CacheEntry | None:
        try:
            key = await self.redis.get(
                f"{self.prefix}:latest:{_lineage(module, description, model)}"
            )
        except (RedisError, OSError) as exc:
            self._warn("autogen.redis_read_failed", exc)
            return None
        return await self.get(key.decode() if isinstance(key, bytes) else key) if key else None

    async def drop(self, entry: CacheEntry) -> None:
        """Forget one entry (and the lineage's pointer when it names it); never raises."""
        latest = f"{self.prefix}:latest:{_lineage(entry.module, entry.description, entry.model)}"
        try:
            pointed = await self.redis.get(latest)
            if isinstance(pointed, bytes):
                pointed = pointed.decode()
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(f"{self.prefix}:entry:{entry.key}")
                pipe.srem(f"{self.prefix}:module:{entry.module}", entry.key)
                if pointed == entry.key:
                    pipe.delete(latest)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._warn("autogen.redis_write_failed", exc)

    async def clear(self, module: str | None = None) -> int:
        pattern = f"{self.prefix}:module:{module or '*'}"
        dropped = 0
        async for set_key in self.redis.scan_iter(match=pattern):
            keys = await self.redis.smembers(set_key)
            for key in keys:
                k = key.decode() if isinstance(key, bytes) else key
                dropped += int(await self.redis.delete(f"{self.prefix}:entry:{k}"))
            await self.redis.delete(set_key)
        if module is None:
            async for latest in self.redis.scan_iter(match=f"{self.prefix}:latest:*"):
                await self.redis.delete(latest)
        return dropped


class AutogenCache:
    """The tiers in order; a hit in a lower tier fills the ones above it."""

    def __init__(self, disk: DiskTier | None = None, remote: RedisTier | None = None) -> None:
        self.memory: dict[str, CacheEntry] = {}
        self._latest: dict[str, str] = {}
        self.disk = disk
        self.remote = remote

    async def get(self, key: str) -> CacheEntry | None:
        hit = self.memory.get(key)
        if hit is None and self.disk is not None:
            hit = self.disk.get(key)
        if hit is None and self.remote is not None:
            hit = await self.remote.get(key)
            if hit is not None and self.disk is not None:
                hit = self.disk.put(hit)
        if hit is not None:
            self.memory[key] = hit
        return hit

    async def latest(self, module: str, description: str, model: str) -> CacheEntry | None:
        """The most recent module generated for this description and model."""
        key = self._latest.get(_lineage(module, description, model))
        if key is not None and key in self.memory:
            return self.memory[key]
        hit = self.disk.latest(module, description, model) if self.disk is not None else None
        if hit is None and self.remote is not None:
            hit = await self.remote.latest(module, description, model)
            if hit is not None and self.disk is not None:
                hit = self.disk.put(hit)  # another machine's module, readable here too
        return hit

    async def put(self, entry: CacheEntry) -> CacheEntry:
        if self.disk is not None:
            entry = self.disk.put(entry)
        if self.remote is not None:
            await self.remote.put(entry)
        self.remember(entry)
        return entry

    async def forget(self, entry: CacheEntry) -> None:
        """Drop one entry from every tier (code that failed when run): the next import
        generates the module again instead of failing the same way."""
        self.memory.pop(entry.key, None)
        lineage = _lineage(entry.module, entry.description, entry.model)
        if self._latest.get(lineage) == entry.key:
            del self._latest[lineage]
        if self.disk is not None:
            self.disk.drop(entry.key)
        if self.remote is not None:
            await self.remote.drop(entry)

    def remember(self, entry: CacheEntry) -> None:
        self.memory[entry.key] = entry
        self._latest[_lineage(entry.module, entry.description, entry.model)] = entry.key
