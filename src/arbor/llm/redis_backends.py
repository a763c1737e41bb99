"""Choosing the LLM layer's backends from settings: in-process, or Redis when
``ARBOR_REDIS_URL`` is set (the scale-out twin of every per-process mechanism).

With Redis, every process that shares the URL shares the rate limits (one Lua-scripted log
per key, :mod:`arbor.llm._redis_limiter`), the circuit breakers' open/close decisions
(:mod:`arbor.llm._redis_breaker`) and the response cache's shared tier after memory and
disk (:mod:`arbor.llm._redis_cache`; ``ARBOR_LLM__CACHE__DISK=false`` makes it replace the
SQLite tier). Without it nothing here opens a connection: the client builds its in-process
parts as before. :func:`build_client` is the one place callers go through.

:func:`key_sharing` gives the service what its API keys share the same way: the limiter
behind the HTTP layer's requests/min per key, and the keys' spending
(:mod:`arbor.llm._redis_budgets`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from arbor.core.clock import Clock, SystemClock
from arbor.core.config import Settings
from arbor.core.metrics import Metrics
from arbor.llm._redis_breaker import RedisBreakerSync
from arbor.llm._redis_budgets import RedisBudgetSync
from arbor.llm._redis_cache import RedisTier
from arbor.llm._redis_limiter import RedisRateLimiter
from arbor.llm.cache import ResponseCache
from arbor.llm.client import LLMClient
from arbor.llm.model import Model
from arbor.llm.ratelimit import WINDOW, InMemoryRateLimiter, RateLimiter
from arbor.llm.usage import UsageSink

__all__ = ["KeySharing", "build_client", "connect_redis", "key_sharing"]


@dataclass(frozen=True, slots=True)
class KeySharing:
    """What the service's per-key limits run on: in-process, or shared through Redis."""

    #: Admits (or refuses, :meth:`RateLimiter.try_acquire`) HTTP requests per key.
    limiter: RateLimiter
    #: Shares the keys' spending between processes (None: the tracker is this process's).
    budgets: RedisBudgetSync | None = None


def key_sharing(
    settings: Settings, client: LLMClient, *, window: float | None = None
) -> KeySharing:
    """In-process limits without ``redis_url``; with it, a Redis limiter (its own key prefix)
    and spending shared through ``client``'s budget tracker. The connection closes with
    ``client``. ``window`` shortens the per-minute window (tests)."""
    if not settings.redis_url:
        return KeySharing(InMemoryRateLimiter(client.clock))
    redis = connect_redis(settings.redis_url)
    limiter = RedisRateLimiter(redis, client.clock, prefix="arbor:http", window=window or WINDOW)
    budgets = RedisBudgetSync(redis, client.budgets)
    client.on_close(redis.aclose)  # runs last
    client.on_close(budgets.aclose)
    return KeySharing(limiter, budgets)


def connect_redis(url: str) -> Redis:
    """A pooled asyncio client for ``url``; nothing connects until the first command.

    No read timeout: pub/sub subscribers wait for messages indefinitely by design."""
    return Redis.from_url(url, socket_connect_timeout=5.0, health_check_interval=30)


async def build_client(
    settings: Settings,
    *,
    models: Mapping[str, Model] | None = None,
    metrics: Metrics | None = None,
    usage_sink: UsageSink | None = None,
    clock: Clock | None = None,
    wrap_limiter: Callable[[RateLimiter], RateLimiter] | None = None,
) -> LLMClient:
    """An :class:`LLMClient` on the backends ``settings`` choose. Call inside the event
    loop that will use it; ``await client.aclose()`` releases the Redis connections too.

    ``wrap_limiter`` layers a limiter over the chosen one (in-process or Redis), e.g. the
    batch engine's pacing, so batches on many workers share one set of limits."""
    clock = clock or SystemClock()
    wrap = wrap_limiter or (lambda inner: inner)
    if not settings.redis_url:
        return LLMClient(
            settings,
            models=models,
            metrics=metrics,
            usage_sink=usage_sink,
            clock=clock,
            limiter=wrap(InMemoryRateLimiter(clock)),
        )
    redis = connect_redis(settings.redis_url)
    llm = settings.llm
    sync = RedisBreakerSync(redis, llm.breaker, clock)
    cache = None
    if llm.cache.enabled:
        tier = RedisTier(redis, clock=clock)
        cache = ResponseCache.from_settings(llm.cache, settings.home, clock=clock, remote=tier)
    client = LLMClient(
        settings,
        models=models,
        metrics=metrics,
        usage_sink=usage_sink,
        clock=clock,
        cache=cache,
        limiter=wrap(RedisRateLimiter(redis, clock)),
        breakers=sync.registry,
    )
    sync.forward = client._parts.breaker_changed  # metrics and log, as for a built registry
    client.on_close(redis.aclose)  # runs last
    client.on_close(sync.aclose)
    await sync.start()
    return client
