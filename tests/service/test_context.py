"""open_context picks its backends from settings: in-process by default, Redis-shared (limits,
breakers, cache tier, event fan-out) with ``ARBOR_REDIS_URL``; closing leaves no task."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arbor.agents.workflow._redis_hub import RedisEventHub
from arbor.core.config import Settings
from arbor.llm._redis_limiter import RedisRateLimiter
from arbor.llm.ratelimit import InMemoryRateLimiter
from arbor.service.context import open_context


def _refuse(*args: object, **kwargs: object) -> Redis:
    raise AssertionError("Redis must not be used without ARBOR_REDIS_URL")


async def test_the_default_context_is_in_process_and_never_touches_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(Redis, "from_url", _refuse)
    monkeypatch.setattr(Redis, "__init__", _refuse)
    ctx = await open_context(Settings(home=tmp_path))
    try:
        assert isinstance(ctx.client.limiter, InMemoryRateLimiter)
        assert ctx.client.cache is not None and ctx.client.cache.remote is None
        assert not isinstance(ctx.checkpoints.hub, RedisEventHub)
    finally:
        await ctx.aclose()


@pytest.mark.redis
async def test_with_a_redis_url_every_shared_part_uses_it(
    redis_server_url: str, tmp_path: Path
) -> None:
    ctx = await open_context(Settings(home=tmp_path, redis_url=redis_server_url))
    try:
        assert isinstance(ctx.client.limiter, RedisRateLimiter)
        assert ctx.client.cache is not None and ctx.client.cache.remote is not None
        assert isinstance(ctx.checkpoints.hub, RedisEventHub)
    finally:
        await ctx.aclose()
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()
