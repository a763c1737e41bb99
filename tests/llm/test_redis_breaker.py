"""Breaker state shared through a real Redis: one replica's opening makes the others fail
fast at once, a close is shared too, a late starter adopts what is open, and the closed
fast path never calls Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from arbor.core.clock import SystemClock
from arbor.core.config import BreakerSettings
from arbor.core.errors import CircuitOpenError, ProviderHTTPError
from arbor.llm._redis_breaker import RedisBreakerSync

pytestmark = pytest.mark.redis

KEY = "openai:gpt"
SETTINGS = BreakerSettings(failure_threshold=2, reset_timeout=30.0, half_open_successes=1)


def _fail() -> ProviderHTTPError:
    return ProviderHTTPError("boom", provider="openai", model="gpt", status_code=503)


@pytest.fixture
def prefix() -> str:
    return f"arbor-test:{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def _replica(
    url: str, prefix: str, settings: BreakerSettings = SETTINGS
) -> AsyncIterator[RedisBreakerSync]:
    redis = Redis.from_url(url)
    sync = RedisBreakerSync(redis, settings, SystemClock(), prefix=prefix)
    await sync.start()
    try:
        yield sync
    finally:
        await sync.aclose()
        await redis.aclose()


async def _until(check: Callable[[], bool], within: float = 10.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        assert loop.time() - start < within, "not propagated in time"
        await asyncio.sleep(0.005)
    return loop.time() - start


async def test_an_open_on_one_replica_fails_fast_on_the_others(
    redis_server_url: str, prefix: str
) -> None:
    seen: list[tuple[str, str]] = []
    async with (
        _replica(redis_server_url, prefix) as a,
        _replica(redis_server_url, prefix) as b,
        _replica(redis_server_url, prefix) as c,
    ):
        b.forward = lambda key, state: seen.append((key, state))
        for _ in range(2):
            a.registry.before_call(KEY)
            a.registry.record_failure(KEY, _fail())
        assert a.registry.state(KEY) == "open"
        took = await _until(lambda: b.registry.is_open(KEY) and c.registry.is_open(KEY))
        # Pub/sub, not a resubscription's read of the stored state (1 s retry): as much
        # slack as a loaded machine can be given while telling the two apart.
        assert took < 0.9
        with pytest.raises(CircuitOpenError) as info:
            b.registry.before_call(KEY)
        assert info.value.retry_after is not None and 25.0 < info.value.retry_after <= 30.0
        assert seen == [(KEY, "open")]  # adopted transitions reach metrics too

        # A replica that starts now adopts the stored state without hearing the message.
        async with _replica(redis_server_url, prefix) as late:
            assert late.registry.is_open(KEY)

        # Closing (after a successful trial elsewhere) is shared as well.
        c.registry.apply(KEY, c.registry.snapshot(KEY))  # no-op: already open
        a.registry.breaker(KEY).apply(type(a.registry.snapshot(KEY))("half_open"))
        a.registry.before_call(KEY)
        a.registry.record_success(KEY)
        assert a.registry.state(KEY) == "closed"
        await _until(lambda: b.registry.state(KEY) == "closed" == c.registry.state(KEY))
        assert await a._redis.exists(f"{prefix}:state:{KEY}") == 0


async def test_closed_calls_never_touch_redis(prefix: str) -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    sync = RedisBreakerSync(down, SETTINGS, SystemClock(), prefix=prefix)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(1000):
        sync.registry.before_call(KEY)
        sync.registry.record_success(KEY)
    assert loop.time() - start < 0.5
    assert sync.registry.state(KEY) == "closed"
    await down.aclose()


async def test_a_replica_with_redis_down_still_opens_locally(prefix: str) -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    sync = RedisBreakerSync(down, SETTINGS, SystemClock(), prefix=prefix, start_timeout=0.5)
    task = asyncio.create_task(sync.start())
    for _ in range(2):
        sync.registry.record_failure(KEY, _fail())
    assert sync.registry.state(KEY) == "open"
    await task
    await sync.aclose()
    await down.aclose()
