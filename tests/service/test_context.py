"""open_context picks its backends from settings: in-process by default, Redis-shared (limits,
breakers, cache tier, event fan-out) with ``ARBOR_REDIS_URL``; closing leaves no task."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from arbor.agents.workflow import END, NodeContext, Workflow
from arbor.agents.workflow._redis_hub import RedisEventHub
from arbor.core.config import Settings
from arbor.llm._redis_limiter import RedisRateLimiter
from arbor.llm.ratelimit import InMemoryRateLimiter
from arbor.service.context import open_context


def _refuse(*args: object, **kwargs: object) -> Redis:
    raise AssertionError("Redis must not be used without ARBOR_REDIS_URL")


async def test_the_default_context_is_in_process_and_never_touches_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(Redis, "from_url", _refuse)
    monkeypatch.setattr(Redis, "__init__", _refuse)
    ctx = await open_context(Settings(home=tmp_path))
    try:
        assert isinstance(ctx.client.limiter, InMemoryRateLimiter)
        assert ctx.client.cache is not None and ctx.client.cache.remote is None
        assert not isinstance(ctx.checkpoints.hub, RedisEventHub)
    finally:
        await ctx.aclose()


@pytest.mark.redis
async def test_with_a_redis_url_every_shared_part_uses_it(
    redis_server_url: str, tmp_path: Path
) -> None:
    ctx = await open_context(Settings(home=tmp_path, redis_url=redis_server_url))
    try:
        assert isinstance(ctx.client.limiter, RedisRateLimiter)
        assert ctx.client.cache is not None and ctx.client.cache.remote is not None
        assert isinstance(ctx.checkpoints.hub, RedisEventHub)
    finally:
        await ctx.aclose()
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} == set()


class _Steps(BaseModel):
    done: list[str] = []


def _slow(model: str | None = None) -> Workflow[_Steps]:
    wf = Workflow("slow", _Steps)

    def step(name: str) -> Any:
        async def node(state: _Steps, ctx: NodeContext) -> dict[str, Any]:
            await asyncio.sleep(0.1)
            return {"done": [*state.done, name]}

        return node

    for name in ("a", "b", "c"):
        wf.add_node(name, step(name))
    wf.edge("a", "b")
    wf.edge("b", "c")
    wf.edge("c", END)
    return wf


@pytest.mark.redis
async def test_two_replicas_a_run_on_one_is_watched_live_on_the_other(
    redis_server_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, redis_url=redis_server_url, database_url=sqlite_url)
    replica_a = await open_context(settings, workflows={"slow": _slow})
    replica_b = await open_context(settings, workflows={"slow": _slow})
    try:
        assert replica_a.runs is not None and replica_b.runs is not None
        replica_b.checkpoints.poll_interval = 3600.0  # only the Redis fan-out can be in time
        run_id = await replica_a.runs.start("slow", {})
        seen: list[str] = []
        async with asyncio.timeout(20), aclosing(replica_b.runs.watch(run_id)) as events:
            async for event in events:
                seen.append(event.type)
        assert seen.count("node_finished") == 3 and seen[-1] == "run_finished"
    finally:
        await replica_a.aclose()
        await replica_b.aclose()
