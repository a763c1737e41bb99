"""The Redis pub/sub plumbing every cross-process fan-out shares (workflow events, breaker state).

Each user runs two tasks: a publisher draining an ``asyncio.Queue`` (``None`` ends it) and a
subscriber that must survive Redis going away. Keeping the retrying listener and the orderly
shutdown here means a fix to either reaches every fan-out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["listen", "stop"]


async def listen(
    redis: Redis,
    channel: str,
    deliver: Callable[[Any], None],
    *,
    on_subscribed: Callable[[], Awaitable[None]],
    on_failure: Callable[[BaseException], None],
    retry: float,
) -> None:
    """Hand every message on ``channel`` to ``deliver``, forever (until cancelled).

    ``on_subscribed`` runs after each (re)subscription, before any message is read, so a caller
    can catch up on state it missed while disconnected. A Redis or socket error is reported to
    ``on_failure`` and the subscription retried after ``retry`` seconds.
    """
    while True:
        try:
            async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(channel)
                await on_subscribed()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        deliver(message["data"])
        except (RedisError, OSError) as exc:
            on_failure(exc)
            await asyncio.sleep(retry)


async def stop(
    queue: asyncio.Queue[Any] | None,
    tasks: Sequence[asyncio.Task[None]],
    *,
    drain: float = 2.0,
) -> None:
    """End the publisher (``tasks[0]``) with a ``None`` on ``queue``, giving it up to ``drain``
    seconds to send what is queued, then cancel and await every task."""
    if queue is not None and tasks:
        queue.put_nowait(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain):
                await asyncio.shield(tasks[0])
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
