"""Run events fanned out between server replicas through Redis pub/sub.

:class:`~arbor.agents.workflow.events.EventHub` wakes watchers in its own process only; a
watcher on replica B of a run executing on replica A would otherwise see new events only at
its fallback poll (1 s). :class:`RedisEventHub` also publishes every committed event on one
Redis channel and hands the events other replicas publish to its local watchers, so they
arrive within a round trip. Delivery stays best effort on purpose: the store is the source of
truth and watchers deduplicate by ``seq`` and re-read the store on a gap, so a lost message
costs latency (the poll still runs), never an event.

``publish`` is synchronous (stores call it right after their commit), so messages go through
a queue to an owned publisher task; :meth:`start` and :meth:`aclose` bound both tasks' lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arbor.agents.workflow.events import EventHub, RunEvent
from arbor.core import pubsub

__all__ = ["RedisEventHub"]

log = structlog.get_logger("arbor.workflow")

#: Seconds between reconnection attempts of the subscriber after Redis went away.
_RETRY = 1.0
#: Messages waiting for the publisher before new ones are dropped (the poll covers them).
_MAX_QUEUED = 10_000


class RedisEventHub(EventHub):
    """An :class:`EventHub` whose published events also reach every other replica's hub."""

    __slots__ = ("_channel", "_dropped", "_queue", "_redis", "_subscribed", "_tasks", "origin")

    def __init__(self, redis: Redis, *, channel: str = "arbor:events") -> None:
        super().__init__()
        self._redis = redis
        self._channel = channel
        self.origin = uuid.uuid4().hex
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._dropped = 0

    def watching(self, run_id: str) -> bool:
        """Always: a watcher on another replica cannot be seen from here."""
        return True

    def publish(self, run_id: str, events: Sequence[RunEvent]) -> None:
        super().publish(run_id, events)
        if not events or self._queue is None:
            return
        if self._queue.qsize() >= _MAX_QUEUED:
            self._dropped += 1
            return
        message = {
            "origin": self.origin,
            "run_id": run_id,
            "events": [[e.type, e.node, e.data, e.seq] for e in events],
        }
        try:
            self._queue.put_nowait(orjson.dumps(message))
        except TypeError as exc:  # data that is not JSON: watchers elsewhere poll for it
            log.warning("workflow.events.unpublishable", run_id=run_id, error=str(exc))

    async def start(self) -> None:
        """Subscribe to the channel and start publishing; returns once subscribed (or after
        5 s, the replicas then relying on the poll until Redis answers)."""
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._publish_loop(self._queue), name="arbor-events-publish"),
            asyncio.create_task(self._subscribe_loop(), name="arbor-events-subscribe"),
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._subscribed.wait()

    async def aclose(self) -> None:
        """Send what is queued (briefly), then stop both tasks."""
        queue, self._queue = self._queue, None
        await pubsub.stop(queue, self._tasks)
        self._tasks = []

    async def _publish_loop(self, queue: asyncio.Queue[bytes | None]) -> None:
        while (message := await queue.get()) is not None:
            try:
                await self._redis.publish(self._channel, message)
            except (RedisError, OSError) as exc:
                log.warning("workflow.events.publish_failed", error=str(exc))

    async def _subscribe_loop(self) -> None:
        await pubsub.listen(
            self._redis,
            self._channel,
            self._deliver,
            on_subscribed=self._on_subscribed,
            on_failure=_subscribe_failed,
            retry=_RETRY,
        )

    async def _on_subscribed(self) -> None:
        self._subscribed.set()

    def _deliver(self, raw: Any) -> None:
        try:
            data = orjson.loads(raw)
            if data["origin"] == self.origin:
                return  # delivered locally when it was published
            run_id = str(data["run_id"])
            events = [RunEvent(str(t), n, dict(d), int(s)) for t, n, d, s in data["events"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("workflow.events.bad_message", error=str(exc))
            return
        if run_id in self._subs:
            EventHub.publish(self, run_id, events)


def _subscribe_failed(exc: BaseException) -> None:
    log.warning("workflow.events.subscribe_failed", error=str(exc))
