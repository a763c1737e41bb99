"""The shared pub/sub plumbing: the listener delivers, catches up after subscribing and retries
when Redis is away; stop drains the publisher and leaves no task running."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arbor.core import pubsub


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.redis
async def test_listen_runs_on_subscribed_then_delivers(redis_server_url: str) -> None:
    channel = f"arbor-test:{uuid.uuid4().hex[:12]}"
    redis = Redis.from_url(redis_server_url)
    got: list[Any] = []
    ready, both = asyncio.Event(), asyncio.Event()

    def deliver(data: Any) -> None:
        got.append(data)
        if len(got) == 3:
            both.set()

    async def on_subscribed() -> None:
        got.append("subscribed")
        ready.set()

    task = asyncio.create_task(
        pubsub.listen(
            redis,
            channel,
            deliver,
            on_subscribed=on_subscribed,
            on_failure=got.append,
            retry=0.01,
        )
    )
    try:
        async with asyncio.timeout(5.0):
            await ready.wait()
            await redis.publish(channel, b"one")
            await redis.publish(channel, b"two")
            await both.wait()
        assert got == ["subscribed", b"one", b"two"]
    finally:
        await pubsub.stop(None, [task])
        await redis.aclose()
    assert task.cancelled()


async def test_listen_reports_failures_and_retries() -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{_closed_port()}/0")
    failures: list[BaseException] = []
    twice = asyncio.Event()

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        if len(failures) == 2:
            twice.set()

    async def on_subscribed() -> None:
        raise AssertionError("never subscribed")

    task = asyncio.create_task(
        pubsub.listen(
            redis,
            "ch",
            failures.append,
            on_subscribed=on_subscribed,
            on_failure=failed,
            retry=0.01,
        )
    )
    try:
        async with asyncio.timeout(5.0):
            await twice.wait()
    finally:
        await pubsub.stop(None, [task])
        await redis.aclose()
    assert all(isinstance(exc, (RedisError, OSError)) for exc in failures)
    assert task.cancelled()


async def test_stop_drains_the_publisher_and_cancels_the_rest() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    sent: list[int] = []

    async def publisher() -> None:
        while (item := await queue.get()) is not None:
            await asyncio.sleep(0)
            sent.append(item)

    async def forever() -> None:
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(publisher()), asyncio.create_task(forever())]
    for item in (1, 2, 3):
        queue.put_nowait(item)
    await pubsub.stop(queue, tasks)
    assert sent == [1, 2, 3]
    assert tasks[0].done() and not tasks[0].cancelled()
    assert tasks[1].cancelled()


async def test_stop_gives_up_draining_after_the_deadline() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def stuck() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pubsub.stop(queue, [task], drain=0.05)
    assert task.cancelled()
    assert loop.time() - started < 2.0
