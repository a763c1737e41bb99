"""The response cache's shared tier: replies one process paid for are hits in every other.

A :class:`~arbor.llm.cache.RemoteTier` on Redis. An entry is one string key holding the
expiry (8-byte big-endian float, wall time) followed by the reply's JSON bytes — the format
every tier shares — and Redis expires it at that same moment (``SET … PXAT``), so the TTL is
honoured without a sweeper. Size is bounded by the server: run it with ``maxmemory`` and an
LRU eviction policy (``allkeys-lru``); entries never outlive their TTL in any case.

The cache is an optimisation, so a Redis that is down or slow reads as a miss and drops the
write (logged, at most once per ``quiet_seconds``) instead of failing the call.
"""

from __future__ import annotations

import struct
import time

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arbor.core.clock import Clock, SystemClock

__all__ = ["RedisTier"]

log = structlog.get_logger("arbor.llm.cache")

_HEADER = struct.Struct(">d")


class RedisTier:
    """Cached replies under ``<prefix>:<cache key>`` on a shared Redis."""

    name = "redis"

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "arbor:cache",
        clock: Clock | None = None,
        owns_connection: bool = False,
        quiet_seconds: float = 30.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock or SystemClock()
        self._owns = owns_connection
        self._quiet = quiet_seconds
        self._warned_at = -float("inf")

    async def get(self, key: str) -> tuple[float, bytes] | None:
        try:
            raw = await self._redis.get(f"{self._prefix}:{key}")
        except (RedisError, OSError) as exc:
            self._warn("llm.cache.redis_read_failed", exc)
            return None
        if not isinstance(raw, bytes) or len(raw) < _HEADER.size:
            return None
        (expires_at,) = _HEADER.unpack_from(raw)
        if expires_at <= self._clock.time():
            return None  # Redis's clock may lag ours by a little: ours decides
        return expires_at, raw[_HEADER.size :]

    async def put(self, key: str, body: bytes, expires_at: float) -> None:
        if expires_at <= self._clock.time():
            return
        try:
            await self._redis.set(
                f"{self._prefix}:{key}",
                _HEADER.pack(expires_at) + body,
                pxat=int(expires_at * 1000),
            )
        except (RedisError, OSError) as exc:
            self._warn("llm.cache.redis_write_failed", exc)

    async def aclose(self) -> None:
        if self._owns:
            await self._redis.aclose()

    def _warn(self, event: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at >= self._quiet:
            self._warned_at = now
            log.warning(event, error=type(exc).__name__, detail=str(exc))
