"""x-ratelimit-* headers: parsing, the plan they call for, and both limiters following it."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator

import httpx2
import pytest
from redis.asyncio import Redis

from arbor.core.clock import FakeClock, SystemClock
from arbor.core.config import ModelLimits
from arbor.llm._ratelimit_headers import (
    MAX_RESET,
    Adaptation,
    RateLimitInfo,
    parse_rate_limit_headers,
    parse_reset,
    plan,
)
from arbor.llm._redis_limiter import RedisRateLimiter
from arbor.llm.ratelimit import InMemoryRateLimiter, Reservation


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m2.5s", 62.5),
        ("1h0m0s", 3600.0),
        ("2m", 120.0),
        ("0.5s", 0.5),
        ("1.5", 1.5),
        ("12", 12.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("7ns", 7e-9),
        (" 3S ", 3.0),
        ("0s", 0.0),
        ("1h2m3.5s", MAX_RESET),
        ("100h", MAX_RESET),  # a garbage-long reset never holds a key for days
    ],
)
def test_reset_formats(text: str, seconds: float) -> None:
    assert parse_reset(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "abc", "1x", "-1s", "1s2", "s", "inf", "nan", "1 s"])
def test_malformed_resets_are_ignored(text: str | None) -> None:
    assert parse_reset(text) is None


def test_headers_are_read_in_any_case_and_garbage_is_dropped() -> None:
    info = parse_rate_limit_headers(
        {
            "X-RateLimit-Limit-Requests": "600",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "lots",
            "x-ratelimit-remaining-tokens": "-5",
            "x-ratelimit-reset-tokens": "6m0s",
            "content-type": "application/json",
        }
    )
    assert info == RateLimitInfo(600, 3, 1.0, None, None, 360.0)
    assert parse_rate_limit_headers({"content-type": "application/json"}) is None
    assert parse_rate_limit_headers({"x-ratelimit-limit-requests": "x"}) is None


def test_httpx_headers_are_read_from_their_raw_bytes() -> None:
    headers = httpx2.Headers(
        [("X-RateLimit-Remaining-Tokens", "42"), ("x-ratelimit-reset-tokens", "20ms")]
    )
    assert parse_rate_limit_headers(headers) == RateLimitInfo(
        remaining_tokens=42, reset_tokens=0.02
    )
    assert parse_rate_limit_headers(httpx2.Headers({"date": "x"})) is None


def test_plan_takes_quotas_from_the_headers_and_caps_only_lower_limits() -> None:
    info = RateLimitInfo(600, 3, 0.5, 10_000, 900, 2.0)
    a = plan(info, ModelLimits(rpm=6000, tpm=5000), in_flight_tokens=400)
    # tokens other requests in flight reserved come off; requests are the limiter's to count
    assert a == Adaptation(3, 0.5, 500, 2.0, cap_rpm=600, cap_tpm=None)
    assert a.hold is None
    used_up = plan(RateLimitInfo(600, 0, 0.5), ModelLimits(rpm=100))
    assert used_up.requests_left == 0 and used_up.hold == 0.5
    assert used_up.cap_rpm is None  # the upstream allows more than configured
    assert plan(RateLimitInfo(limit_requests=10), ModelLimits()) == Adaptation()


async def test_in_memory_limiter_leaves_what_remains_to_the_requests_in_flight() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock)
    limits = ModelLimits(rpm=1000)
    answered = await limiter.acquire("m", limits, 1)
    for _ in range(2):  # two more sent, not answered yet
        await limiter.acquire("m", limits, 1)
    # the first one's answer: 3 remain, but the two in flight will take two of them
    await limiter.adapt("m", Adaptation(requests_left=3, requests_reset=1.0))
    await limiter.reconcile(answered, 1)
    assert isinstance(await limiter.try_acquire("m", limits, 1), Reservation)
    assert await limiter.try_acquire("m", limits, 1) == pytest.approx(1.0)
    # a later answer of the same window saying more remain does not raise the quota
    await limiter.adapt("m", Adaptation(requests_left=3, requests_reset=0.99))
    assert isinstance(await limiter.try_acquire("m", limits, 1), float)


async def test_in_memory_limiter_admits_the_quota_then_waits_for_the_reset() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock)
    limits = ModelLimits(rpm=1000)
    await limiter.adapt("m", Adaptation(requests_left=2, requests_reset=0.5))
    assert isinstance(await limiter.try_acquire("m", limits, 1), Reservation)
    assert isinstance(await limiter.try_acquire("m", limits, 1), Reservation)
    assert await limiter.try_acquire("m", limits, 1) == pytest.approx(0.5)
    clock.advance(0.5)  # the upstream's window reset: the quota no longer applies
    assert isinstance(await limiter.try_acquire("m", limits, 1), Reservation)


async def test_in_memory_limiter_token_quota_and_caps() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(clock)
    limits = ModelLimits(rpm=1000, tpm=100_000)
    await limiter.adapt("m", Adaptation(tokens_left=150, tokens_reset=2.0, cap_rpm=3))
    assert limiter.caps("m") == (3, math.inf)
    assert isinstance(await limiter.try_acquire("m", limits, 100), Reservation)
    assert await limiter.try_acquire("m", limits, 100) == pytest.approx(2.0)  # 50 left
    clock.advance(2.0)
    assert isinstance(await limiter.try_acquire("m", limits, 100), Reservation)
    assert isinstance(await limiter.try_acquire("m", limits, 100), Reservation)
    wait = await limiter.try_acquire("m", limits, 1)  # the cap: 3 a minute, not 1000
    assert wait == pytest.approx(58.0)
    await limiter.adapt("m", Adaptation())  # the upstream no longer reports less
    assert limiter.caps("m") == (math.inf, math.inf)
    assert isinstance(await limiter.try_acquire("m", limits, 1), Reservation)


@pytest.fixture
async def redis(redis_server_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server_url)
    yield client
    await client.aclose()


@pytest.mark.redis
async def test_redis_limiter_follows_the_same_plan(redis: Redis) -> None:
    prefix = f"arbor-test:{uuid.uuid4().hex[:12]}"
    limiter = RedisRateLimiter(redis, SystemClock(), prefix=prefix)
    limits = ModelLimits(rpm=1000, tpm=100_000)
    await limiter.adapt("m", Adaptation(requests_left=1, requests_reset=0.3, cap_tpm=5000))
    assert await limiter.caps("m") == (math.inf, 5000.0)
    assert isinstance(await limiter.try_acquire("m", limits, 10), Reservation)
    wait = await limiter.try_acquire("m", limits, 10)
    assert isinstance(wait, float) and 0.2 < wait <= 0.3
    await limiter.adapt("t", Adaptation(tokens_left=5, tokens_reset=0.3))
    wait = await limiter.try_acquire("t", limits, 10)  # 5 tokens left, 10 wanted
    assert isinstance(wait, float) and 0.2 < wait <= 0.3
    assert isinstance(await limiter.try_acquire("t", limits, 5), Reservation)
    await limiter.adapt("m", Adaptation())
    assert await limiter.caps("m") == (math.inf, math.inf)
    await redis.delete(*[k async for k in redis.scan_iter(f"{prefix}:*")])
