"""One ``init(...)``: its configuration, client, cache and generator, driven from the
synchronous import system.

Imports are synchronous and may happen inside a running event loop, while the client is
asynchronous; so the runtime owns one event loop in a daemon thread, builds the client and
cache there on first use, and every generation runs on it (``run`` blocks the importing thread
until the module is ready). ``close()`` releases the client (flushing its usage records), the
Redis connection and the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from arbor.apps.autogen.cache import AutogenCache, CacheEntry, DiskTier, RedisTier
from arbor.apps.autogen.caller import CallerContext
from arbor.apps.autogen.config import AutogenConfig
from arbor.apps.autogen.generator import Generator, ModuleRequest
from arbor.core.config import Settings, load_settings
from arbor.llm.client import LLMClient

__all__ = ["AutogenRuntime", "cache_root", "open_cache"]

T = TypeVar("T")


def cache_root(settings: Settings) -> Path:
    return settings.home / "autogen"


@contextlib.asynccontextmanager
async def open_cache(settings: Settings) -> AsyncIterator[AutogenCache]:
    """The tiers an import uses: disk under ``ARBOR_HOME/autogen``, Redis when configured."""
    redis = None
    if settings.redis_url:
        from arbor.llm.redis_backends import connect_redis

        redis = connect_redis(settings.redis_url)
    try:
        yield AutogenCache(DiskTier(cache_root(settings)), RedisTier(redis) if redis else None)
    finally:
        if redis is not None:
            await redis.aclose()


class AutogenRuntime:
    def __init__(
        self,
        config: AutogenConfig,
        *,
        settings: Settings | None = None,
        client: LLMClient | None = None,
        cache: AutogenCache | None = None,
    ) -> None:
        self.config = config
        self.settings = settings or (client.settings if client is not None else load_settings())
        self._client = client
        self._cache = cache
        self._generator: Generator | None = None
        self._stack = contextlib.AsyncExitStack()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._build_lock: asyncio.Lock | None = None
        self.closed = False

    # ---- the loop thread ------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the runtime's loop and wait for it (from any other thread)."""
        if self.closed:
            coro.close()
            raise RuntimeError("this arbor.autogen runtime is closed; call init() again")
        loop = self._ensure_loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("arbor.autogen cannot generate a module while generating one")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="arbor-autogen", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Release the client (when built here), Redis and the loop thread; idempotent."""
        if self.closed:
            return
        self.closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._stack.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    # ---- generation -----------------------------------------------------------------------
    async def generator(self) -> Generator:
        """The generator, building the client and cache on first use (on the loop)."""
        if self._build_lock is None:
            self._build_lock = asyncio.Lock()
        async with self._build_lock:
            if self._generator is None:
                client = self._client or await self._open_client()
                cache = self._cache or await self._open_cache()
                self._generator = Generator(client, self.config, cache)
            return self._generator

    async def _open_client(self) -> LLMClient:
        from arbor.llm.setup import open_client

        return await self._stack.enter_async_context(open_client(self.settings))

    async def _open_cache(self) -> AutogenCache:
        if not self.config.cache:
            return AutogenCache()
        return await self._stack.enter_async_context(open_cache(self.settings))

    async def agenerate(self, request: ModuleRequest) -> CacheEntry:
        return await (await self.generator()).generate(request)

    def generate(
        self,
        module: str,
        names: list[str],
        caller: CallerContext | None,
        existing: CacheEntry | None = None,
    ) -> CacheEntry:
        return self.run(self.agenerate(ModuleRequest(module, names, caller, existing)))

    def forget(self, entry: CacheEntry) -> None:
        """Drop ``entry`` from the cache's tiers (its code failed when executed)."""
        self.run(self._forget(entry))

    async def _forget(self, entry: CacheEntry) -> None:
        await (await self.generator()).cache.forget(entry)
