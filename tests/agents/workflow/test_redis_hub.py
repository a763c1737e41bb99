"""Event fan-out between replicas through a real Redis: a watcher on replica B sees a run
executing on replica A promptly, not at its fallback poll."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import pytest
from redis.asyncio import Redis

from arbor.agents.workflow import RunEvent
from arbor.agents.workflow._redis_hub import RedisEventHub
from arbor.agents.workflow.sql import SQLCheckpointStore
from arbor.store import Database

pytestmark = pytest.mark.redis


@asynccontextmanager
async def _hub(url: str, channel: str) -> AsyncIterator[RedisEventHub]:
    redis = Redis.from_url(url)
    hub = RedisEventHub(redis, channel=channel)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.aclose()
        await redis.aclose()


async def test_a_watcher_on_another_replica_sees_events_without_the_poll(
    db: Database, redis_server_url: str
) -> None:
    channel = f"arbor-test:{uuid.uuid4().hex[:12]}:events"
    async with _hub(redis_server_url, channel) as hub_a, _hub(redis_server_url, channel) as hub_b:
        # An hour-long fallback poll: only the Redis fan-out can deliver in time.
        replica_a = SQLCheckpointStore(db, hub=hub_a, poll_interval=3600.0)
        replica_b = SQLCheckpointStore(db, hub=hub_b, poll_interval=3600.0)
        run_id = await replica_a.create_run("w", {})
        arrivals: list[tuple[str, float]] = []
        loop = asyncio.get_running_loop()

        async def watch() -> None:
            async with aclosing(replica_b.watch(run_id)) as events:
                async for event in events:
                    arrivals.append((event.type, loop.time()))

        watcher = asyncio.create_task(watch())
        async with asyncio.timeout(20):  # subscribed, however slowly
            while hub_b.watchers() < 1:  # noqa: ASYNC110 - no "subscribed" event
                await asyncio.sleep(0.01)
        sent: list[float] = []
        for event in (RunEvent("node_started", "a"), RunEvent("node_finished", "a")):
            sent.append(loop.time())
            await replica_a.append_event(run_id, event)
            await asyncio.sleep(0.05)
        sent.append(loop.time())
        await replica_a.append_event(run_id, RunEvent("run_finished", data={"status": "ok"}))
        async with asyncio.timeout(20):
            await watcher
        assert [t for t, _ in arrivals] == ["node_started", "node_finished", "run_finished"]
        delays = [at - s for (_, at), s in zip(arrivals, sent, strict=True)]
        assert max(delays) < 5, delays  # slack for a loaded machine; the poll is an hour
        assert hub_b.watchers() == 0


async def test_messages_from_elsewhere_reach_only_watched_runs_and_bad_ones_are_ignored(
    redis_server_url: str,
) -> None:
    channel = f"arbor-test:{uuid.uuid4().hex[:12]}:events"
    async with _hub(redis_server_url, channel) as hub:
        sub = hub._subscribe("r1")
        other = Redis.from_url(redis_server_url)
        try:
            await other.publish(channel, b"not json")
            await other.publish(channel, b'{"origin":"x","run_id":"r2","events":[["a",null,{},1]]}')
            await other.publish(channel, b'{"origin":"x","run_id":"r1","events":[["b",null,{},7]]}')
            async with asyncio.timeout(20):
                await sub.wake.wait()
            assert [(e.type, e.seq) for e in sub.take() or []] == [("b", 7)]
        finally:
            hub._unsubscribe("r1", sub)
            await other.aclose()
