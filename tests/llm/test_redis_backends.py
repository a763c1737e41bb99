"""Backends chosen by settings: in-process without ``ARBOR_REDIS_URL`` (and no Redis
touched), shared through a real Redis with it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arbor.core.config import Settings
from arbor.core.errors import ProviderHTTPError
from arbor.llm._redis_limiter import RedisRateLimiter
from arbor.llm.breaker import BreakerRegistry
from arbor.llm.ratelimit import InMemoryRateLimiter, RateLimiter
from arbor.llm.redis_backends import build_client
from arbor.llm.setup import open_client
from arbor.testing import FunctionModel


def _refuse(*args: object, **kwargs: object) -> Redis:
    raise AssertionError("Redis must not be used without ARBOR_REDIS_URL")


async def test_without_redis_url_nothing_touches_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(Redis, "from_url", _refuse)
    monkeypatch.setattr(Redis, "__init__", _refuse)
    settings = Settings(home=tmp_path)
    assert settings.redis_url is None
    model = FunctionModel(lambda r: "ok")
    client = await build_client(settings, models={"test:a": model})
    try:
        assert isinstance(client.limiter, InMemoryRateLimiter)
        assert client.cache is not None and client.cache.remote is None
        first = await client.complete(model="test:a", messages="hi", temperature=0)
        again = await client.complete(model="test:a", messages="hi", temperature=0)
        assert (first.message.content, first.cached, again.cached) == ("ok", False, True)
    finally:
        await client.aclose()
    async with open_client(settings) as opened:
        assert isinstance(opened.limiter, InMemoryRateLimiter)


@pytest.mark.redis
async def test_two_clients_share_cache_limits_and_breakers(
    redis_server_url: str, tmp_path: Path
) -> None:
    model_id = f"test:m{uuid.uuid4().hex[:10]}"
    settings = Settings(
        home=tmp_path,
        redis_url=redis_server_url,
        llm={
            "limits": {model_id: {"rpm": 2}},
            "cache": {"disk": False},
            "breaker": {"failure_threshold": 1, "reset_timeout": 30},
            "retry": {"max_attempts": 1},
        },
    )
    calls: list[str] = []

    def reply(request: object) -> str:
        calls.append("x")
        return "shared"

    a = await build_client(settings, models={model_id: FunctionModel(reply)})
    b = await build_client(settings, models={model_id: FunctionModel(reply)})
    try:
        assert isinstance(a.limiter, RedisRateLimiter)
        assert a.cache is not None and a.cache.remote is not None
        # The cache's shared tier: b's identical request is a hit from a's call.
        first = await a.complete(model=model_id, messages="same question", temperature=0)
        again = await b.complete(model=model_id, messages="same question", temperature=0)
        assert (first.cached, again.cached, again.message.content) == (False, True, "shared")
        assert b.cache is not None and b.cache.stats()["redis"].hits == 1
        # The shared limit: rpm=2 over both clients; a's call used one, b's takes the other,
        # the next one (either client) waits for the minute.
        await b.complete(model=model_id, messages="another")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await a.complete(model=model_id, messages="a third")
        assert len(calls) == 2
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.redis
async def test_a_breaker_opened_by_one_client_is_open_in_the_other(
    redis_server_url: str, tmp_path: Path
) -> None:
    model_id = f"test:m{uuid.uuid4().hex[:10]}"
    settings = Settings(
        home=tmp_path,
        redis_url=redis_server_url,
        llm={
            "breaker": {"failure_threshold": 1, "reset_timeout": 30},
            "retry": {"max_attempts": 1},
        },
    )

    def fail(request: object) -> str:
        raise ProviderHTTPError("down", provider="test", model="m", status_code=503)

    a = await build_client(settings, models={model_id: FunctionModel(fail)})
    b = await build_client(settings, models={model_id: FunctionModel(fail)})
    try:
        assert isinstance(b.breakers, BreakerRegistry)
        with pytest.raises(ProviderHTTPError):
            await a.complete(model=model_id, messages="hi")
        for _ in range(2000):  # 20 s at least
            if b.breakers.is_open(model_id):
                break
            await asyncio.sleep(0.01)
        assert b.breakers.is_open(model_id)
        text = b.metrics.render().decode()
        assert "arbor_llm_breaker" in text  # the adopted state reaches b's metrics
    finally:
        await a.aclose()
        await b.aclose()
    # Closed clients leave no task behind.
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


@pytest.mark.parametrize("shared", [False, pytest.param(True, marks=pytest.mark.redis)])
async def test_wrap_limiter_layers_over_the_chosen_limiter(
    shared: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("redis_server_url") if shared else None
    wrapped: list[RateLimiter] = []

    def wrap(inner: RateLimiter) -> RateLimiter:
        wrapped.append(inner)
        return inner

    client = await build_client(Settings(home=tmp_path, redis_url=url), wrap_limiter=wrap)
    try:
        kind = RedisRateLimiter if shared else InMemoryRateLimiter
        assert len(wrapped) == 1 and isinstance(wrapped[0], kind)
        assert client.limiter is wrapped[0]
    finally:
        await client.aclose()
