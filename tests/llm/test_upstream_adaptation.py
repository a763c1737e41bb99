"""Against the mock upstream, whose limit is lower than the configured rpm: the client reads
its x-ratelimit-* headers and stops being refused (in-process and Redis limiters)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from arbor.core.clock import SystemClock
from arbor.core.config import Settings
from arbor.llm._ratelimit_headers import Adaptation
from arbor.llm._redis_limiter import RedisRateLimiter
from arbor.llm.client import LLMClient
from arbor.llm.ratelimit import InMemoryRateLimiter, RateLimiter
from arbor.llm.types import ChatRequest, Message
from arbor.testing.mock_upstream import MockConfig, MockUpstream

MODEL = "mock:mock-1"
#: The upstream: 1200 rpm, enforced as 20 requests per 1 s window.
UPSTREAM_RPM, PER_WINDOW = 1200, 20
#: What the deployment believes: ten times more.
CONFIGURED_RPM = 12_000
REQUESTS = 60


@pytest.fixture
async def mock() -> AsyncIterator[MockUpstream]:
    server = MockUpstream(MockConfig(port=0, rpm=UPSTREAM_RPM))
    await server.start()
    yield server
    await server.stop()


def _settings(url: str) -> Settings:
    return Settings(
        providers={"mock": {"base_url": url, "api_key": "sk-test"}},  # type: ignore[dict-item]
        llm={
            "cache": {"enabled": False},
            "limits": {MODEL: {"rpm": CONFIGURED_RPM}},
            "retry": {"max_attempts": 10, "base_delay": 0.05},
        },
    )


async def _drive(mock: MockUpstream, limiter: RateLimiter, concurrency: int) -> int:
    """``REQUESTS`` calls, ``concurrency`` at a time; returns the 429s the upstream sent."""
    async with LLMClient(_settings(mock.url), limiter=limiter) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                request = ChatRequest(model=MODEL, messages=[Message.user(f"q{i}")], max_tokens=5)
                await client.complete(request)

        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
    assert mock.stats.by_status.get("200") == REQUESTS
    return mock.stats.by_status.get("429", 0)


async def test_the_mock_sends_rate_limit_headers_when_limited(mock: MockUpstream) -> None:
    async with LLMClient(_settings(mock.url)) as client:
        await client.complete(ChatRequest(model=MODEL, messages=[Message.user("hi")]))
        limiter = client.limiter
        assert isinstance(limiter, InMemoryRateLimiter)
        assert limiter.caps(MODEL)[0] == UPSTREAM_RPM  # read from x-ratelimit-limit-requests


async def test_without_adaptation_the_upstream_refuses_many(mock: MockUpstream) -> None:
    """The baseline the next tests improve on: the configured rpm alone is far too high."""
    limiter = InMemoryRateLimiter(SystemClock())

    async def ignore(key: str, adaptation: Adaptation) -> None:
        return None

    limiter.adapt = ignore  # type: ignore[method-assign]
    assert await _drive(mock, limiter, concurrency=8) > 5


async def test_in_process_limiter_adapts_to_zero_429s(mock: MockUpstream) -> None:
    # 8 at a time fit one upstream window, so nothing is ever refused, not even at first.
    assert await _drive(mock, InMemoryRateLimiter(SystemClock()), concurrency=8) == 0


async def test_more_concurrency_than_a_window_is_refused_only_before_the_first_answer(
    mock: MockUpstream,
) -> None:
    """30 at once: the first burst goes out before any header was seen (at most 30 - 20
    refused); after that, none."""
    refused = await _drive(mock, InMemoryRateLimiter(SystemClock()), concurrency=30)
    assert refused <= 30 - PER_WINDOW


@pytest.fixture
async def redis_limiter(redis_server_url: str) -> AsyncIterator[RedisRateLimiter]:
    redis: Any = Redis.from_url(redis_server_url)
    prefix = f"arbor-test:{uuid.uuid4().hex[:12]}"
    yield RedisRateLimiter(redis, SystemClock(), prefix=prefix)
    keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.mark.redis
async def test_redis_limiter_adapts_to_zero_429s(
    mock: MockUpstream, redis_limiter: RedisRateLimiter
) -> None:
    assert await _drive(mock, redis_limiter, concurrency=8) == 0
    assert (await redis_limiter.caps(MODEL))[0] == UPSTREAM_RPM
