"""Circuit-breaker state shared between processes through Redis.

Counting stays local (:class:`~arbor.llm.breaker.BreakerRegistry`), so a call through a
closed breaker never waits on the network. What is shared are the decisions: when a breaker
here opens, the transition is published (Redis pub/sub) and stored under
``<prefix>:<key>`` with a TTL of the time it stays open; every other process adopts it at
once (:meth:`BreakerRegistry.apply`) and fails fast too. A close after successful trials is
published the same way. Half-open is not shared: each process probes on its own once the
shared open time has run out. A process that starts (or reconnects) while a breaker is open
elsewhere reads the stored keys, so it does not need to have heard the message.

Transitions are handed from the synchronous ``on_change`` hook to an owned publisher task
through a queue; a Redis that is down is logged and retried, never raised into a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arbor.core import pubsub
from arbor.core.clock import Clock
from arbor.core.config import BreakerSettings
from arbor.llm.breaker import BreakerRegistry, BreakerSnapshot, BreakerState, OnBreakerChange

__all__ = ["RedisBreakerSync"]

log = structlog.get_logger("arbor.llm.breaker")

#: Seconds between reconnection attempts of the subscriber after Redis went away.
_RETRY = 1.0
_Change = tuple[str, BreakerState, float]


class RedisBreakerSync:
    """Owns a :class:`BreakerRegistry` whose open/close transitions every process shares.

    ``forward`` (e.g. the client's metrics hook) sees every transition, local or adopted.
    Call :meth:`start` inside the event loop that serves calls and :meth:`aclose` at the end.
    """

    def __init__(
        self,
        redis: Redis,
        settings: BreakerSettings,
        clock: Clock,
        *,
        prefix: str = "arbor:breaker",
        forward: OnBreakerChange | None = None,
        start_timeout: float = 5.0,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._channel = f"{prefix}:changes"
        self.forward = forward
        self._start_timeout = start_timeout
        self.origin = uuid.uuid4().hex
        self.registry = BreakerRegistry(settings, clock, on_change=self._on_change)
        self._adopting = False
        self._queue: asyncio.Queue[_Change | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe, adopt breakers open elsewhere right now, start publishing; gives up
        waiting after ``start_timeout`` (the subscriber keeps retrying in the background)."""
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._publish_loop(self._queue), name="arbor-breaker-publish"),
            asyncio.create_task(self._subscribe_loop(), name="arbor-breaker-subscribe"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._start_timeout):
                await self._subscribed.wait()

    async def aclose(self) -> None:
        """Publish what is queued (briefly), then stop both tasks."""
        await pubsub.stop(self._queue, self._tasks)
        self._tasks = []

    # ---- this process's transitions -----------------------------------------------------
    def _on_change(self, key: str, state: BreakerState) -> None:
        if self.forward is not None:
            self.forward(key, state)
        if self._adopting or state == "half_open" or self._queue is None:
            return
        self._queue.put_nowait((key, state, self.registry.snapshot(key).retry_after))

    async def _publish_loop(self, queue: asyncio.Queue[_Change | None]) -> None:
        while (change := await queue.get()) is not None:
            key, state, retry_after = change
            message = {"key": key, "state": state, "retry_after": retry_after}
            message["origin"] = self.origin
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    stored = f"{self._prefix}:state:{key}"
                    if state == "open" and retry_after > 0.0:
                        pipe.set(stored, orjson.dumps(message), px=max(1, int(retry_after * 1000)))
                    else:
                        pipe.delete(stored)
                    pipe.publish(self._channel, orjson.dumps(message))
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("llm.breaker.publish_failed", model=key, error=str(exc))

    # ---- other processes' transitions ---------------------------------------------------
    async def _subscribe_loop(self) -> None:
        await pubsub.listen(
            self._redis,
            self._channel,
            self._adopt,
            on_subscribed=self._on_subscribed,
            on_failure=_subscribe_failed,
            retry=_RETRY,
        )

    async def _on_subscribed(self) -> None:
        await self._adopt_stored()  # after subscribing: nothing slips between
        self._subscribed.set()

    async def _adopt_stored(self) -> None:
        async for name in self._redis.scan_iter(match=f"{self._prefix}:state:*", count=500):
            raw = await self._redis.get(name)
            ttl = await self._redis.pttl(name)
            if raw is not None and ttl > 0:
                self._adopt(raw, retry_after=ttl / 1000)

    def _adopt(self, raw: Any, *, retry_after: float | None = None) -> None:
        try:
            data = orjson.loads(raw)
            key, state = str(data["key"]), data["state"]
            if data.get("origin") == self.origin and retry_after is None:
                return  # our own message: already applied here
            if state not in ("open", "closed"):
                return
            remaining = float(data["retry_after"]) if retry_after is None else retry_after
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("llm.breaker.bad_message", error=str(exc))
            return
        self._adopting = True
        try:
            self.registry.apply(key, BreakerSnapshot(state, remaining))
        finally:
            self._adopting = False


def _subscribe_failed(exc: BaseException) -> None:
    log.warning("llm.breaker.subscribe_failed", error=str(exc))
