"""The response cache's Redis tier against a real Redis: shared between caches, TTL honoured,
and a Redis that is down reads as a miss."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from arbor.core.clock import FakeClock
from arbor.llm._redis_cache import RedisTier
from arbor.llm.cache import MemoryTier, ResponseCache
from arbor.llm.types import ChatResponse, Message, Usage

pytestmark = pytest.mark.redis


def _reply(text: str = "Paris.") -> ChatResponse:
    return ChatResponse(
        id="chatcmpl-1",
        model="gpt",
        message=Message.assistant(text),
        finish_reason="stop",
        usage=Usage(input_tokens=3, output_tokens=2),
    )


@pytest.fixture
async def redis(redis_server_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"arbor-test:{uuid.uuid4().hex[:12]}"


async def test_a_reply_cached_by_one_process_is_a_hit_in_another(redis: Redis, prefix: str) -> None:
    clock = FakeClock(wall=time.time())
    writer = ResponseCache(
        [MemoryTier(10, clock)],
        ttl_seconds=60,
        clock=clock,
        remote=RedisTier(redis, prefix=prefix, clock=clock),
    )
    reader_memory = MemoryTier(10, clock)
    reader = ResponseCache(
        [reader_memory],
        ttl_seconds=60,
        clock=clock,
        remote=RedisTier(redis, prefix=prefix, clock=clock),
    )
    assert await reader.aget("k") is None
    await writer.aput("k", _reply())
    hit = await reader.aget("k")
    assert hit is not None and hit.message.content == "Paris."
    assert reader.last_tier == "redis"
    assert reader_memory.get("k") is not None  # copied up into memory
    assert reader.stats()["redis"].hits == 1 and reader.stats()["redis"].misses == 1
    ttl = await redis.pttl(f"{prefix}:k")
    assert 55_000 < ttl <= 60_000  # Redis expires it with the entry's TTL


async def test_expired_entries_are_misses_and_redis_drops_them(redis: Redis, prefix: str) -> None:
    tier = RedisTier(redis, prefix=prefix)
    await tier.put("old", b"{}", time.time() - 1)  # already expired: not even written
    assert await redis.exists(f"{prefix}:old") == 0
    # Read back within 2 s: one round trip, even on a loaded machine.
    await tier.put("soon", b'{"a":1}', time.time() + 2)
    found = await tier.get("soon")
    assert found is not None and found[1] == b'{"a":1}'
    async with asyncio.timeout(20):  # Redis expires it on its own clock
        while await redis.exists(f"{prefix}:soon"):  # noqa: ASYNC110 - nothing to wait on
            await asyncio.sleep(0.1)
    assert await tier.get("soon") is None


async def test_errored_replies_are_not_stored(redis: Redis, prefix: str) -> None:
    cache = ResponseCache([], ttl_seconds=60, remote=RedisTier(redis, prefix=prefix))
    await cache.aput("k", _reply().model_copy(update={"finish_reason": "error"}))
    assert await redis.exists(f"{prefix}:k") == 0


async def test_a_redis_that_is_down_is_a_miss_not_an_error() -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        cache = ResponseCache([], ttl_seconds=60, remote=RedisTier(down))
        await cache.aput("k", _reply())
        assert await cache.aget("k") is None
    finally:
        await down.aclose()
