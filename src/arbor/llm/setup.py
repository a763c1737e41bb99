"""Building a store-backed :class:`LLMClient` from settings.

The pieces stay injectable (tests build clients by hand); this is the one place that wires
the defaults a running Arbor uses: the database migrated to head, usage records written to
it in batches, and budgets seeded with what was already spent. The limiter, breakers and
cache are in-process, or shared through Redis when ``ARBOR_REDIS_URL`` is set
(:func:`~arbor.llm.redis_backends.build_client`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arbor.core.config import Settings
from arbor.llm.client import LLMClient
from arbor.llm.redis_backends import build_client
from arbor.llm.usage import StoreUsageSink
from arbor.store import Database, UsageRepository, migrate

__all__ = ["open_client"]


@asynccontextmanager
async def open_client(settings: Settings) -> AsyncIterator[LLMClient]:
    """An LLMClient whose usage lands in the configured database; closed on exit."""
    db = Database.from_settings(settings)
    try:
        await migrate(db)
        sink = StoreUsageSink(UsageRepository(db))
        client = await build_client(settings, usage_sink=sink)
        try:
            yield client
        finally:
            await client.aclose()  # flushes the usage sink before the engine goes away
    finally:
        await db.dispose()
